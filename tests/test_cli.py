"""utils/cli: parsers derived from the option dataclasses keep YOLOv7's flags and enforce ranges."""

from __future__ import annotations

import dataclasses

import pytest

import data.convert
import data.preview
import detect
import export
import models.__main__
import models.convert
import models.gradpath
import train
import val
from engine.detect.run import DetectOptions
from engine.export.options import ExportOptions
from engine.train.options import TrainOptions
from engine.val.run import ValOptions
from utils.cli import build_parser, check_ranges, option
from utils.config import ConfigError


@dataclasses.dataclass
class Toy:
    size: list[int] = option([64], "sizes", aliases=["--img"], at_least=32)
    mode: str = option("a", choices=["a", "b"], shortcuts={"--bee": "b"})
    ratio: float = option(0.0, at_least=0.0, below=1.0)
    hidden: bool = option(True, cli=False)


def test_derived_parser_types_aliases_shortcuts_and_defaults():
    p = build_parser(Toy)
    assert vars(p.parse_args([])) == {"size": [64], "mode": "a", "ratio": 0.0}
    assert vars(p.parse_args(["--img", "96", "128", "--bee", "--ratio", "0.5"])) == {
        "size": [96, 128], "mode": "b", "ratio": 0.5}
    assert Toy().size is not Toy().size  # list defaults are per instance


@pytest.mark.parametrize("argv", [["--img", "16"], ["--mode", "c"], ["--ratio", "1.0"], ["--ratio", "x"]])
def test_out_of_range_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser(Toy).parse_args(argv)
    assert e.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_check_ranges_names_the_flag():
    with pytest.raises(ConfigError, match="--ratio must be < 1"):
        check_ranges(Toy(ratio=1.5))
    check_ranges(Toy())


@pytest.mark.parametrize("main, argv, flag", [
    (train.main, ["--epochs", "0"], "--epochs"), (train.main, ["--batch-size", "0"], "--batch-size"),
    (train.main, ["--img", "16"], "--img-size"), (train.main, ["--workers", "-2"], "--workers"),
    (val.main, ["--img", "8"], "--img-size"), (val.main, ["--conf-thres", "2"], "--conf-thres"),
    (detect.main, ["--max-det", "0"], "--max-det"), (export.main, ["--weights", "x.pt", "--batch-size", "0"],
                                                       "--batch-size"),
])
def test_commands_reject_out_of_range_flags(main, argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("main, argv, flag", [
    (models.gradpath.main, ["--cfg", "x.yaml", "--img", "8"], "--img"),
    (data.convert.main, ["--to", "xml", "--data", "x.yaml", "--out", "x"], "--to"),
    (data.preview.main, ["--batch", "0"], "--batch"), (data.preview.main, ["--split", "dev"], "--split"),
    (models.__main__.main, ["--cfg", "x.yaml", "--nc", "0"], "--nc"),
])
def test_module_commands_reject_out_of_range_flags(main, argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


@pytest.mark.parametrize("main, argv, prog", [
    (models.gradpath.main, ["--cfg", "none.yaml"], "python -m models.gradpath"),
    (models.convert.main, ["none.pt"], "python -m models.convert"),
    (data.convert.main, ["--to", "yolo", "--data", "none.yaml", "--out", "out"], "python -m data.convert"),
    (data.preview.main, ["--data", "none.yaml"], "python -m data.preview"),
])
def test_module_commands_report_a_missing_file_in_one_line(main, argv, prog, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: none.") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("cls", [TrainOptions, ValOptions, DetectOptions, ExportOptions, models.__main__.SummaryOptions,
                                 models.gradpath.GradpathOptions, models.convert.ConvertOptions,
                                 data.convert.ConvertOptions, data.preview.PreviewOptions])
def test_every_field_is_declared_with_option(cls):
    # one declaration per flag: a plain field would get a flag without help or range
    assert all("cli" in f.metadata for f in dataclasses.fields(cls))


@pytest.mark.parametrize(("argv", "cache"), [([], "auto"), (["--cache-images"], "ram"), (["--cache-images", "disk"], "disk"),
                                             (["--cache-images", "none"], None)])
def test_cache_images_flag(argv, cache):
    opt = TrainOptions(**vars(build_parser(TrainOptions).parse_args(argv)))
    assert opt.image_cache == cache
    assert TrainOptions(cache_images="").image_cache is None  # the value older runs' opt.yaml holds

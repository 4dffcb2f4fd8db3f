"""Released weights by name (models/released.py) over utils/downloads.py, against a local HTTP
server on 127.0.0.1 that serves an official-format fixture checkpoint (with Range requests)."""

from __future__ import annotations

import copy
import http.server
import socket
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from official_fixtures import randomize, train_checkpoint, write_official
from train_helpers import TINY_MODEL, tiny_data

import detect
from data.shapes import CLASSES
from models.checkpoint_io import read_checkpoint
from models.released import DIR_ENV, RELEASED, URL_ENV, resolve_weights
from models.yolo import Model
from utils.downloads import DownloadError


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes); ``drop_after[name]`` bytes and then a closed connection
    on that file's first request; every request's (path, Range header) in ``requests``."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.drop_after, self.requests = files, {}, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v0.1"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.server.requests.append((name, self.headers.get("Range")))
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        drop = self.server.drop_after.pop(name, None)
        self.wfile.write(body[start:] if drop is None else body[start:drop])
        if drop is not None:
            self.close_connection = True


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """A small official YOLOv7 training checkpoint (the layout of yolov7_training.pt), as bytes on disk."""
    root = tmp_path_factory.mktemp("released")
    cfg = copy.deepcopy(TINY_MODEL)
    ema = randomize(Model(cfg))
    ema.names = list(CLASSES)
    path = root / "fixture.pt"
    write_official(root, {path: train_checkpoint(ema, randomize(Model(cfg), 1), cfg, "IDetect")})
    return path


@pytest.fixture
def server(official):
    srv = Server({"yolov7.pt": official.read_bytes(), "yolov7-tiny.pt": official.read_bytes()})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch, server) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(DIR_ENV, str(folder))
    monkeypatch.setenv(URL_ENV, server.url)
    return folder


def test_a_released_name_is_downloaded_once_and_converts(cache, server, official):
    ckpt = read_checkpoint("yolov7.pt")  # not a file here: fetched into the cache, converted in memory
    assert (cache / "yolov7.pt").read_bytes() == official.read_bytes()
    assert not (cache / "yolov7.pt.part").exists()
    assert ckpt["names"] == list(CLASSES) and ckpt["model"]
    assert resolve_weights("yolov7.pt") == cache / "yolov7.pt"
    assert server.requests == [("yolov7.pt", None)]  # the second time from the cache


def test_a_local_file_or_an_unknown_name_is_left_alone(cache, server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("yolov7.pt").write_bytes(b"mine")
    assert resolve_weights("yolov7.pt") == Path("yolov7.pt")
    assert resolve_weights("other.pt") == Path("other.pt")
    assert server.requests == []


def test_an_interrupted_download_resumes_with_a_range_request(cache, server, official):
    body = official.read_bytes()
    server.drop_after["yolov7.pt"] = len(body) // 3
    with pytest.raises(DownloadError, match="resume"):
        resolve_weights("yolov7.pt")
    part = cache / "yolov7.pt.part"
    assert part.stat().st_size == len(body) // 3 and not (cache / "yolov7.pt").exists()
    assert resolve_weights("yolov7.pt") == cache / "yolov7.pt"
    assert (cache / "yolov7.pt").read_bytes() == body and not part.exists()
    assert server.requests == [("yolov7.pt", None), ("yolov7.pt", f"bytes={len(body) // 3}-")]


def test_a_file_of_the_wrong_size_is_refused_and_removed(cache, server, official):
    assert RELEASED["yolov7-tiny.pt"] != official.stat().st_size
    with pytest.raises(DownloadError, match=rf"not the {RELEASED['yolov7-tiny.pt']} of the released file"):
        resolve_weights("yolov7-tiny.pt")
    assert list(cache.iterdir()) == []


def test_offline_is_one_line_naming_the_address_and_the_folder(tmp_path, monkeypatch, capsys):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{port}/v0.1")
    assert detect.main(["--weights", "yolov7x.pt", "--source", str(image), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("detect.py: error: ")
    assert f"http://127.0.0.1:{port}/v0.1/yolov7x.pt: cannot connect" in err
    assert str(tmp_path / "cache" / "yolov7x.pt") in err


def test_detect_runs_a_released_name(cache, server, tmp_path, capsys):
    data = tiny_data(tmp_path / "data", n_train=1, n_val=2)
    images = data.parent / "shapes_tiny" / "images" / "val"
    assert detect.main(["--weights", "yolov7.pt", "--source", str(images), "--img", "64", "--device", "cpu",
                        "--nosave", "--project", str(tmp_path / "detect")]) == 0
    assert "2 images" in capsys.readouterr().out and (cache / "yolov7.pt").is_file()

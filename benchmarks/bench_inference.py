"""CPU inference latency per image: PyTorch eager (fused), TorchScript, ONNX Runtime fp32 / INT8
and OpenVINO fp32 / INT8, through the backends detect.py uses (engine.detect).

    python benchmarks/bench_inference.py                      # yolov7-tiny, 640, batch 1, 1 thread, model only
    python benchmarks/bench_inference.py --img 320 640 --batch 1 8 --threads 1 2 --mode model e2e --json
    python benchmarks/bench_inference.py --weights runs/train/exp/weights/best.pt --img 256

``model``: the network forward of one batch (decode included; NMS, letterbox not). ``e2e``:
Predictor.predict on BGR 960x960 frames: letterbox, forward, NMS at conf 0.25, boxes mapped back
(square frames, so the checkpoint, whose letterbox pads only to the stride, runs the same input
size as the fixed-shape files).
Files are fixed-shape exports of each (img, batch), the INT8 ones calibrated on ``--calib``
images of ``--data``'s train split. Without ``--weights`` the model has random weights
(latency does not depend on their values, except NMS's share of e2e). Reports the median and the
minimum over ``--iters`` timed calls after ``--warmup`` untimed ones, in ms per image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any folder

from data import load_data_config  # noqa: E402
from engine.backends import TorchBackend, load_backend  # noqa: E402
from engine.detect.predictor import Predictor  # noqa: E402
from engine.export.exporter import export_model  # noqa: E402
from models.yolo import Model  # noqa: E402
from utils.checkpoint import CHECKPOINT_VERSION, save_checkpoint  # noqa: E402

# backend name -> (export format producing its file, INT8?); eager runs the checkpoint itself
BACKENDS = {"eager": (None, False), "torchscript": ("torchscript", False), "ort_fp32": ("onnx", False),
            "ort_int8": ("onnx-int8", True), "openvino_fp32": ("openvino", False),
            "openvino_int8": ("openvino-int8", True)}


def time_calls(fn: Callable[[], object], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` over ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def random_checkpoint(cfg: str, path: Path) -> Path:
    """A checkpoint of ``cfg`` with random weights (80 classes unless the config says otherwise)."""
    torch.manual_seed(0)
    model = Model(cfg)
    ckpt = {"model": model.state_dict(), "model_cfg": model.yaml, "names": [str(i) for i in range(model.nc)],
            "nc": model.nc, "hyp": {}, "opt": {}, "epoch": -1, "best_fitness": 0.0, "metrics": [],
            "version": CHECKPOINT_VERSION}
    return save_checkpoint(ckpt, path)


def export_files(weights: Path, folder: Path, img: int, batch: int, names: list[str], data: str,
                 calib: int) -> dict[str, Path]:
    """Fixed-shape exports of ``weights`` at [batch, 3, img, img] for ``names`` (BACKENDS keys)."""
    formats = {BACKENDS[n][0].removesuffix("-int8") for n in names if BACKENDS[n][0]}
    if not formats:
        return {}
    model = TorchBackend(weights, torch.device("cpu")).model
    int8 = any(BACKENDS[n][1] for n in names)
    results = export_model(model, folder / f"{weights.stem}_{img}_b{batch}", sorted(formats), (img, img),
                           batch=batch, exporter="torchscript", int8=int8,
                           calib_sources=load_data_config(data).split("train") if int8 else None, calib=calib)
    return {r.format: r.file for r in results}


def runner(name: str, weights: Path, files: dict[str, Path], mode: str, img: int, batch: int,
           threads: int) -> Callable[[], object]:
    """A zero-argument call of one batch on backend ``name`` in ``mode`` ('model' or 'e2e')."""
    path = weights if name == "eager" else files[BACKENDS[name][0]]
    if mode == "e2e":
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (960, 960, 3), dtype=np.uint8) for _ in range(batch)]
        predictor = Predictor(path, "cpu", img_size=img, threads=threads)
        return lambda: predictor.predict(frames)
    backend = load_backend(path, torch.device("cpu"), threads=threads)
    x = torch.rand(batch, 3, img, img, generator=torch.Generator().manual_seed(0))
    return lambda: backend(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov7-tiny.yaml", help="model config (random weights) unless --weights")
    p.add_argument("--weights", default=None, help="a trained checkpoint instead of random weights")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--img", nargs="+", type=int, default=[640], help="square input sizes")
    p.add_argument("--batch", nargs="+", type=int, default=[1])
    p.add_argument("--threads", nargs="+", type=int, default=[1], help="CPU thread counts")
    p.add_argument("--mode", nargs="+", default=["model"], choices=["model", "e2e"])
    p.add_argument("--data", default="shapes", help="data set whose train split calibrates the INT8 files")
    p.add_argument("--calib", type=int, default=32, help="INT8 calibration images (latency does not depend on them)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs (TorchScript and OpenVINO optimise in them)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print all rows as one JSON object (last line)")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else random_checkpoint(args.cfg, Path(tmp) / "random.pt")
        model_name = Path(args.weights).name if args.weights else Path(args.cfg).stem
        for img in args.img:
            for batch in args.batch:
                files = export_files(weights, Path(tmp), img, batch, args.backends, args.data, args.calib)
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    for mode in args.mode:
                        for name in args.backends:
                            seconds = time_calls(runner(name, weights, files, mode, img, batch, threads),
                                                 args.warmup, args.iters)
                            row = {"model": model_name, "backend": name, "mode": mode, "img": img, "batch": batch,
                                   "threads": threads, "ms_median": round(1000 * statistics.median(seconds) / batch, 2),
                                   "ms_min": round(1000 * min(seconds) / batch, 2)}
                            print(f"{model_name:>12} {name:>14} {mode:>5} img={img} batch={batch} threads={threads} "
                                  f"{row['ms_median']:8.1f} ms/img (min {row['ms_min']:.1f})", flush=True)
                            rows.append(row)
    if args.json:
        import onnxruntime
        import openvino

        print(json.dumps({"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                          "openvino": openvino.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

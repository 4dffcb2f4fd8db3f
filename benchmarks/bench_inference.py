"""Inference latency per image: PyTorch eager (fused), TorchScript and ONNX Runtime.

    python benchmarks/bench_inference.py                      # yolov7-tiny and yolov7, 640, 1 and 2 threads
    python benchmarks/bench_inference.py --cfg yolov7-tiny.yaml --img 320 --threads 4 --json

Times the network forward of one batch (decoded output included, NMS and letterbox not), on
random weights (latency does not depend on their values), after warm-up runs; reports the median
and the minimum in milliseconds per image. CPU only by design: thread counts are what it varies.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any folder

from engine.export.exporter import export_onnx, export_torchscript  # noqa: E402
from models.yolo import Model  # noqa: E402


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


def runners(model: Model, files: dict[str, Path], x: torch.Tensor, threads: int) -> dict[str, Callable[[], object]]:
    """One zero-argument callable per backend, each running the forward of batch ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.x
        scripted = torch.jit.load(str(files["torchscript"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(files["onnx"]), options, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy().astype(np.float32)}

    def eager() -> object:
        with torch.inference_mode():
            return model(x)[0]

    def torchscript() -> object:
        with torch.inference_mode():
            return scripted(x)

    return {"pytorch_eager_fused": eager, "torchscript": torchscript,
            "onnxruntime": lambda: session.run(None, feed)}


def bench_config(cfg: str, img: int, batch: int, threads_list: list[int], warmup: int, iters: int) -> list[dict]:
    """Rows {model, backend, threads, img, batch, ms_median, ms_min} for one model config."""
    torch.manual_seed(0)
    model = Model(cfg).fuse().eval()
    model.names = [str(i) for i in range(model.nc)]
    x = torch.rand(batch, 3, img, img)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"onnx": export_onnx(model, Path(tmp) / "model.onnx", (img, img), batch=batch),
                 "torchscript": export_torchscript(model, Path(tmp) / "model.torchscript", (img, img), batch)}
        for threads in threads_list:
            torch.set_num_threads(threads)
            for backend, fn in runners(model, files, x, threads).items():
                seconds = time_calls(fn, warmup, iters)
                row = {"model": Path(cfg).stem, "backend": backend, "threads": threads, "img": img, "batch": batch,
                       "ms_median": round(1000 * statistics.median(seconds) / batch, 2),
                       "ms_min": round(1000 * min(seconds) / batch, 2)}
                print(f"{row['model']:>12} {backend:>20} threads={threads} {row['ms_median']:8.1f} ms/img "
                      f"(min {row['ms_min']:.1f})", flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", default=["yolov7-tiny.yaml", "yolov7.yaml"], help="model configs")
    p.add_argument("--img", type=int, default=640, help="square input size")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="CPU thread counts to compare")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs (TorchScript optimises during its first ones)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print all rows as one JSON object (last line)")
    args = p.parse_args(argv)
    rows = []
    for cfg in args.cfg:
        rows += bench_config(cfg, args.img, args.batch, args.threads, args.warmup, args.iters)
    if args.json:
        print(json.dumps({"torch": torch.__version__, "onnxruntime": ort.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""utils/device.py: device strings as users write them."""

from __future__ import annotations

import shutil

import pytest
import torch

from utils.device import DeviceError, compile_module, compile_unavailable, select_device


def _fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(("request_", "local_rank", "expected"), [
    ("cuda", 0, "cuda:0"), ("CUDA", 1, "cuda:1"), ("cuda:1", 0, "cuda:1"), ("0,1", 1, "cuda:1"), ("", 0, "cuda:0"),
    ("cpu", 0, "cpu"),
])
def test_cuda_device_strings(monkeypatch, request_: str, local_rank: int, expected: str) -> None:
    _fake_cuda(monkeypatch, 2)
    assert select_device(request_, local_rank) == torch.device(expected)


def test_cuda_without_cuda_says_so(monkeypatch) -> None:
    _fake_cuda(monkeypatch, 0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        select_device("cuda")


def test_compile_without_a_cpp_compiler_says_why(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in compile_unavailable(torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    with pytest.raises(DeviceError, match="--compile: no C.. compiler"):
        compile_module(model, torch.device("cpu"))
    assert not hasattr(model, "_compiled_call_impl") or model._compiled_call_impl is None  # left eager


def test_compile_is_in_place_and_keeps_the_state_dict() -> None:
    if compile_unavailable(torch.device("cpu")):
        pytest.skip(compile_unavailable(torch.device("cpu")))
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    keys = list(model.state_dict())
    assert compile_module(model, torch.device("cpu")) is model
    assert model._compiled_call_impl is not None and list(model.state_dict()) == keys  # no _orig_mod. prefix

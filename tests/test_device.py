"""utils/device.py: device strings as users write them."""

from __future__ import annotations

import pytest
import torch

from utils.device import select_device


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

"""Device choice, threads, bf16 autocast (CUDA) and channels-last for the lab's trainings."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from pipeline.encoders import resolve_device


def setup(device: str = "auto", threads: int | None = None) -> torch.device:
    """The device to train on (see pipeline.encoders.resolve_device: a BadInput for CUDA where none is
    visible); sets torch's CPU threads when given."""
    if threads:
        torch.set_num_threads(threads)
    return resolve_device(device)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to the device, channels-last (faster for convolutions on CPU too)."""
    return model.to(device).to(memory_format=torch.channels_last)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA, nothing on CPU."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_input(x: torch.Tensor, device: torch.device, channels_last: bool = True) -> torch.Tensor:
    """Move a (B, 3, H, W) batch to the device, channels-last unless told otherwise."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()

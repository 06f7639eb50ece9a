"""Reading and writing weight files without executing pickled code (local paths or fsspec URLs)."""
from __future__ import annotations

import hashlib
import io

import fsspec
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline.errors import BadInput


def read_bytes(url: str) -> bytes:
    """The whole file at a local path or fsspec URL; a one-line FileNotFoundError if it is missing."""
    try:
        with fsspec.open(url, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {url}") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(url: str, sha256: str, what: str, field: str) -> bytes:
    """The file's bytes, refused (one-line BadInput) when it is missing or its sha256 is not `sha256`
    (`what` names the file in the message, `field` the config entry that records the checksum)."""
    try:
        data = read_bytes(url)
    except FileNotFoundError:
        raise BadInput(f"{what} {url} is missing; retrain or restore it") from None
    if sha256_bytes(data) != sha256:
        raise BadInput(f"{what} {url} does not match {field} (replaced or corrupted); retrain or restore it")
    return data


def load_state_dict(url: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, sha256 of the file) from a .safetensors file or a torch file read with weights_only=True."""
    data = read_bytes(url)
    if url.endswith(".safetensors"):
        sd = st_load(data)
    else:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling refusal becomes one clear line
            raise ValueError(f"cannot load {url} safely (weights_only=True): {str(e).splitlines()[0]}") from None
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
        if not isinstance(sd, dict):
            raise ValueError(f"{url} holds no state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}, sha256_bytes(data)


def save_safetensors(state: dict[str, torch.Tensor], url: str, metadata: dict[str, str] | None = None) -> str:
    """Write tensors as safetensors (temp name then rename); returns the sha256 of the file."""
    from pipeline.storage import write_bytes_atomic

    data = st_save({k: v.detach().contiguous().cpu() for k, v in state.items()}, metadata=metadata)
    write_bytes_atomic(url, data)
    return sha256_bytes(data)

"""The shard list of a run: every input expanded, spelled canonically, deduplicated, with our own
outputs left out; unreachable, swapped or mixed inputs are one-line errors."""
from __future__ import annotations

import os
import posixpath

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.corpus.shards import expand_shards
from pipeline.errors import describe
from pipeline.job.errors import JobError
from pipeline.job.ownership import MARKER, is_marked

_PATTERN_CHARS = "*?[{"


def canonical(url: str) -> str:
    """One spelling per shard: local paths absolute and normalised (`a/../a/x.tar` -> `/…/a/x.tar`)."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        return os.path.normpath(os.path.abspath(path))
    return url


def _protocol(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def _base(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The folder an input names: itself, the parent of a file, or the part of a pattern before its first wildcard."""
    cut = min((path.index(c) for c in _PATTERN_CHARS if c in path), default=None)
    if cut is not None:
        return posixpath.dirname(path[:cut])
    return path.rstrip("/") if fs.isdir(path) else posixpath.dirname(path)


def _expand(item: str) -> list[str]:
    try:
        return expand_shards(item)
    except (FileNotFoundError, ValueError) as e:
        raise JobError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - unreachable hosts, missing credentials: one line naming the URL
        raise JobError(f"cannot list --input {item}: {describe(e)}") from None


def resolve_inputs(inputs: list[str], out: str) -> list[str]:
    """Shard URLs of `inputs` in input order, each once. Left out: shards under --out and shards under
    any folder below an input that holds our marker (a run's outputs inside the input folder).
    Refused: an input that is itself a run's --out (swapped --input/--out), inputs on two filesystems."""
    out_url = canonical(out)
    out_proto, out_prefix = _protocol(out_url), fsspec.core.url_to_fs(out_url)[1].rstrip("/") + "/"
    marked: dict[tuple[str, str], bool] = {}
    urls: list[str] = []
    seen: set[str] = set()
    for item in inputs:
        found = _expand(item)
        fs, path = fsspec.core.url_to_fs(item)
        base = _base(fs, path)
        if isinstance(fs, LocalFileSystem):
            base = os.path.normpath(os.path.abspath(base))
        if is_marked(fs, base):
            raise JobError(f"--input {item} is the --out of a dede run (it holds {MARKER}); were --input and "
                           "--out swapped? (to rescore a run's cleaned shards pass its clean/ folder)")
        for url in map(canonical, found):
            ufs, upath = fsspec.core.url_to_fs(url)
            key = os.path.realpath(upath) if isinstance(ufs, LocalFileSystem) else url
            inside_out = _protocol(url) == out_proto and upath.startswith(out_prefix)
            if key in seen or inside_out or _under_marked(ufs, upath, base, marked):
                continue
            seen.add(key)
            urls.append(url)
    if len({_protocol(u) for u in urls}) > 1:
        raise JobError(f"--input mixes filesystems ({', '.join(sorted({_protocol(u) for u in urls}))}); "
                       "score each in its own run")
    return urls


def _under_marked(fs: fsspec.AbstractFileSystem, path: str, base: str, cache: dict) -> bool:
    folder, top = posixpath.dirname(path), base.rstrip("/")
    while folder.startswith(top + "/") and folder.rstrip("/") != top:
        k = (type(fs).__name__, folder)
        if k not in cache:
            cache[k] = is_marked(fs, folder)
        if cache[k]:
            return True
        folder = posixpath.dirname(folder)
    return False

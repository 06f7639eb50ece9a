"""The one shard-list expander: paths, directories, globs, brace patterns and fsspec URLs -> shard URLs."""
from __future__ import annotations

import posixpath

import fsspec
from braceexpand import braceexpand

from pipeline.corpus.reader import escape_name, valid_utf8
from pipeline.errors import BadInput

_GLOB_CHARS = set("*?[")


def _protocol_prefix(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


def _utf8_name(url: str) -> str:
    """`url` itself, or BadInput when the file name is not valid UTF-8 (it names output files and
    fills the scores table's string columns)."""
    if not valid_utf8(url):
        raise BadInput(f"shard file name {escape_name(url)} is not valid UTF-8; rename it")
    return url


def expand_shards(inputs: str | list[str], suffix: str = ".tar") -> list[str]:
    """Every shard an input names, sorted and unique. Directories are searched recursively for
    `suffix`; `{000..009}` braces and `*` globs are expanded. `pipe:` URLs are refused, and so are
    file names that are not valid UTF-8 (BadInput)."""
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    out: list[str] = []
    for item in items:
        for pattern in braceexpand(item):
            if pattern.startswith("pipe:"):
                raise ValueError(f"refusing shard URL {pattern!r}: pipe: URLs run shell commands")
            fs, path = fsspec.core.url_to_fs(pattern)
            prefix = _protocol_prefix(pattern)
            if _GLOB_CHARS & set(path):
                found = [p for p in fs.glob(path) if p.endswith(suffix)]
            elif fs.isdir(path):
                found = [p for p in fs.find(path) if p.endswith(suffix)]
            elif fs.exists(path):
                found = [path]
            else:
                raise FileNotFoundError(f"no shard at {pattern}")
            out.extend(_utf8_name(prefix + p if prefix else p) for p in found)
    if not out:
        raise FileNotFoundError(f"no {suffix} shards found in {items}")
    return sorted(set(out))


def common_root(urls: list[str]) -> str:
    """The deepest folder holding every shard (with its protocol prefix)."""
    prefix = _protocol_prefix(urls[0])
    paths = [u[len(prefix):] if prefix else u for u in urls]
    root = posixpath.dirname(paths[0]) if len(paths) == 1 else posixpath.commonpath(paths)
    if len(paths) > 1 and root in paths:
        root = posixpath.dirname(root)
    return prefix + root


def shard_stem(url: str, root: str) -> str:
    """The shard's path relative to `root`, `.tar` removed, `/` kept: names its outputs."""
    rel = posixpath.relpath(url[len(_protocol_prefix(url)):], root[len(_protocol_prefix(root)):])
    return rel[:-4] if rel.endswith(".tar") else rel

"""Pack images into WebDataset shards: `ingest.py folder SRC --out DIR` or `ingest.py cifar10 --split test --out DIR`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.corpus.ingest import cifar10_samples, folder_samples, write_shards  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402


def file_prefix(text: str) -> str:
    """argparse type: a plain file-name prefix (no '/', no '\\', no '..')."""
    if "/" in text or "\\" in text or "\0" in text or ".." in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain file-name prefix (no '/', no '..')")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    sub = ap.add_subparsers(dest="what", required=True)
    f = sub.add_parser("folder", help="every image under a folder (label = parent folder name)")
    f.add_argument("src")
    c = sub.add_parser("cifar10", help="CIFAR-10 from the shared JPEG archive, else torchvision's download")
    c.add_argument("--split", default="test", choices=["train", "test"])
    c.add_argument("--source", default=None, help="cifar10-jpg.tar.gz (default: ../shared/data/cifar10/)")
    c.add_argument("--limit", type=cli.positive_int, default=None, help="first N samples only")
    for p in (f, c):
        p.add_argument("--out", required=True, help="output folder or fsspec URL")
        p.add_argument("--shard-size", type=cli.positive_int, default=1000, help="samples per shard (default 1000)")
        p.add_argument("--prefix", type=file_prefix, default="", help="shard file-name prefix: PREFIXNNNNNN.tar")
    return ap


def run(a: argparse.Namespace) -> int:
    samples = folder_samples(a.src) if a.what == "folder" else cifar10_samples(a.split, a.source)[: a.limit]
    if not samples:
        raise BadInput(f"no images found in {getattr(a, 'src', a.what)}")
    urls = write_shards(iter(samples), a.out, a.shard_size, total=len(samples), prefix=a.prefix)
    print(f"wrote {len(samples)} samples in {len(urls)} shards under {a.out}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The ensemble's member search over the cached score runs (no rescoring): every set of one to four candidate
detectors, each rank fusion (max, mean, fisher), ranked on the validation pools (jobs/lab_detect.py --pools val-0.5
val-0.01) by the mean TPR at 1% clean FPR over the 1%-poisoned ones (then mean AUC), or with --rank-by auc by mean AUC;
the test pools reported beside; writes RESULTS/fusion.json and RESULTS/fusion.md.

  lab_fusion.py --extra demo=demo/run-all      # also report a run scored with --detectors all (not ranked)
  lab_fusion.py --also results/trigger-blend   # rank on that folder's victims' validation pools too
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.errors import BadInput  # noqa: E402
from pipeline.lab import detect_report, fusion  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=RUN",
                    help="a score_corpus run (with --detectors all and ground truth `poisoned`) reported beside the table")
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder of results.json and fusion.*")
    ap.add_argument("--also", action="append", type=Path, default=[], metavar="FOLDER",
                    help="another folder of lab_detect results (e.g. other triggers' victims): its validation pools "
                         "join the ranking and its test pools the report, as FOLDER-NAME/attack@pool")
    ap.add_argument("--max-size", type=cli.positive_int, default=4, help="members of the largest sets searched")
    ap.add_argument("--rank-by", choices=fusion.RANK_BY, default="tpr",
                    help="tpr: mean validation TPR at 1%% clean FPR over the 1%%-poisoned pools, then mean AUC; "
                         "auc: mean validation AUC")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    return ap


def run(a: argparse.Namespace) -> None:
    extra = {}
    for item in a.extra:
        name, sep, path = item.partition("=")
        if not sep or not Path(path, "run.json").exists():
            raise BadInput(f"--extra {item!r}: use NAME=RUN, RUN a finished score_corpus folder")
        extra[name] = Path(path)
    missing = [str(folder) for folder in a.also if not (folder / detect_report.RESULTS).exists()]
    if missing:
        raise BadInput(f"--also {missing[0]}: no {detect_report.RESULTS} there; run jobs/lab_detect.py --results "
                       f"{missing[0]} first")
    also = {folder.name: detect_report.load(folder) for folder in a.also}
    out = fusion.search(detect_report.load(a.results), extra, size=a.max_size, progress=a.progress, also=also,
                        rank_by=a.rank_by)
    out.update({k: v for k, v in detect_report.meta(a.argv, "jobs/lab_fusion.py").items() if k in ("command", "commit")})
    fusion.write(a.results, out)
    print(f"wrote {a.results / 'fusion.json'} and {a.results / 'fusion.md'}")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

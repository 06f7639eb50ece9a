"""Measure detection on the lab's backdoored encoders through the product's own path (pipeline.lab.detect):
per attack, the newest implanted cached victim; per auxiliary set, a decoder (pipeline.dede.train); per test
pool (0.5: 1,000 clean + 1,000 triggered CIFAR-10 test images; 0.01: all 10,000 with 100 triggered), a
scoring run (pipeline.job.run.run_job) with DeDe and the job's embedding detectors; then AUC, TPR/FPR at
each detector's default threshold, oracle TPR at 1% FPR and the median rule, and the downstream probe with
and without each detector's filtering (pipeline.lab.downstream), into RESULTS/results.json
(merged: other keys are kept) and RESULTS/detection.md (generated from the json). Pools, auxiliary
shards, decoders and score runs are cached under $DEDE_LAB_CACHE/detect, so a rerun only re-renders.

  lab_detect.py [--attacks badencoder drupe] [--aux id ood id-poisoned] [--victim ATTACK=SPEC]
                [--preset small] [--epochs 20] [--max-aux N] [--threads N] [--results results]
  lab_detect.py --calibration-seeds 5 [--calibration-victim SPEC]   # asked vs realised FPR, 5 decoder seeds
  lab_detect.py --pools val-0.5 val-0.01 --aux id ...               # validation pools (jobs/lab_fusion.py)
  lab_detect.py --render                                             # detection.md from results.json only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.dede.model import PRESETS  # noqa: E402
from pipeline.detect.ensemble import FUSIONS  # noqa: E402
from pipeline.lab import detect, detect_report, downstream  # noqa: E402
from pipeline.lab.attacks import ATTACKS  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402
from pipeline.lab.detect_data import AUX_SETS, DOWNSTREAM_POOL, POOLS, VALIDATION_POOLS  # noqa: E402


def _scale(text: str) -> float:
    x = cli.positive_float(text)
    if x > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--attacks", nargs="+", choices=ATTACKS, default=list(detect.DEFAULT_ATTACKS))
    ap.add_argument("--victim", action="append", metavar="ATTACK=SPEC",
                    help="the victim of ATTACK: an encoder spec (lab:simclr-r18@FILE) or a lab cache folder "
                         "(default: the newest implanted cached card of the attack); repeatable")
    ap.add_argument("--aux", nargs="+", choices=AUX_SETS, default=[detect.DEFAULT_AUX],
                    help="auxiliary sets, one decoder each: id (CIFAR-10 train), ood (Tiny-ImageNet), "
                         "id-poisoned (CIFAR-10 train, 1%% triggered)")
    ap.add_argument("--pools", nargs="+", choices=[*POOLS, DOWNSTREAM_POOL, *VALIDATION_POOLS],
                    default=[*POOLS, DOWNSTREAM_POOL],
                    help="test pools: 0.5 (1,000 clean + 1,000 triggered), 0.01 (10,000 with 100 triggered); "
                         "downstream: a probe on the victim's features trained on CIFAR-10 train with 1%% triggered, "
                         "with and without each detector's filtering (paper Table 2); val-0.5, val-0.01: the same "
                         "mixes of CIFAR-10 train images no decoder reads, scored with the default auxiliary set's "
                         "decoder, on which jobs/lab_fusion.py chooses the ensemble")
    ap.add_argument("--preset", choices=list(PRESETS), default="small", help="decoder size")
    ap.add_argument("--epochs", type=cli.positive_int, default=20, help="decoder training epochs")
    ap.add_argument("--batch-size", type=cli.positive_int, default=256)
    ap.add_argument("--trim", type=float, default=0.0,
                    help="decoders leave out this share of each batch's highest-error images (train_decoder --trim)")
    ap.add_argument("--train-mask-ratio", type=float, default=None,
                    help="decoders train at this mask ratio instead of the preset's 0.99, the scoring one "
                         "(train_decoder --train-mask-ratio; 0.9: the paper's)")
    ap.add_argument("--bank-trim", type=float, default=detect.Settings.bank_trim,
                    help="score runs leave this share of the bank's most outlying rows out "
                         "(score_corpus --bank-trim; default %(default)s, the product's)")
    ap.add_argument("--ablation", metavar="NAME", default=None,
                    help="record this measurement as arm NAME of results.json's ablations (test and validation pools; "
                         "no downstream), not in the main table: an arm is kept on its validation rows")
    ap.add_argument("--max-aux", type=cli.positive_int, default=None,
                    help="use the first N auxiliary images (a seeded uniform subset)")
    ap.add_argument("--pool-scale", type=_scale, default=1.0,
                    help="multiply every pool's counts (tests: 0.01 -> 10 + 10 and 100 images)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the pools' and auxiliary sets' draws")
    ap.add_argument("--threshold", default="fpr:0.01", help="the runs' threshold policy (score_corpus --threshold)")
    ap.add_argument("--detectors", nargs="+", default=["all"],
                    help="the job's detectors where it has them (score_corpus --detectors); else DeDe only")
    ap.add_argument("--flag-by", default=None, help="score_corpus --flag-by, where the job has it")
    ap.add_argument("--ensemble", default=None, metavar="A,B,...",
                    help="score_corpus --ensemble: the ensemble's members (default: the job's)")
    ap.add_argument("--fusion", choices=FUSIONS, default=None, help="score_corpus --fusion (default: the job's)")
    ap.add_argument("--actors", type=cli.positive_int, default=1, help="scoring actors")
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="folder of results.json and detection.md (tests pass a temporary one)")
    ap.add_argument("--render", action="store_true", help="only regenerate detection.md from results.json")
    ap.add_argument("--calibration-seeds", type=cli.positive_int, default=None, metavar="N",
                    help="instead of the detection: N decoders (seeds 0..N-1) on the id set, each scoring the clean "
                         "test set; asked against realised FPR into results.json's calibration")
    ap.add_argument("--calibration-victim", default=None, metavar="SPEC",
                    help="the calibration's encoder (default: the newest cached clean SimCLR, else the first "
                         "implanted victim of --attacks)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli.add_device(ap)
    return ap


def run(a: argparse.Namespace) -> None:
    if a.render:
        print(f"wrote {detect_report.rerender(a.results)}")
        return
    if a.threads is not None and a.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {a.threads}")
    settings = detect.Settings(preset=a.preset, epochs=a.epochs, max_aux=a.max_aux, batch_size=a.batch_size,
                               trim=a.trim, train_mask_ratio=a.train_mask_ratio, bank_trim=a.bank_trim, pool_seed=a.seed, pool_scale=a.pool_scale,
                               threshold=a.threshold,
                               detectors=tuple(a.detectors), flag_by=a.flag_by,
                               ensemble=tuple(n.strip() for n in a.ensemble.split(",")) if a.ensemble else None,
                               fusion=a.fusion, device=a.device, threads=a.threads,
                               actors=a.actors, progress=not a.no_progress)
    setup(a.device, a.threads)
    old = detect_report.load(a.results)
    if a.calibration_seeds:
        spec, card, sha = detect.calibration_victim(a.calibration_victim, a.attacks, detect.parse_victims(a.victim))
        cal = detect.measure_calibration(spec, card, sha, a.calibration_seeds, settings)
        results = detect_report.merge(old, {}, detect_report.meta(a.argv), calibration=cal)
    elif a.ablation:
        victims = detect.resolve_victims(a.attacks, detect.parse_victims(a.victim))
        attacks = detect.measure(victims, a.aux, settings, pools=[p for p in a.pools if p != DOWNSTREAM_POOL])
        results = detect_report.merge_ablation(old, a.ablation, attacks, detect_report.meta(a.argv), settings.record())
    else:
        victims = detect.resolve_victims(a.attacks, detect.parse_victims(a.victim))
        attacks = detect.measure(victims, a.aux, settings, pools=a.pools)
        if DOWNSTREAM_POOL in a.pools:
            for attack, blocks in downstream.measure_all(victims, a.aux, settings).items():
                attacks[attack].update(blocks)
        results = detect_report.merge(old, attacks, detect_report.meta(a.argv))
    detect_report.write(a.results, results)
    print(f"wrote {a.results / detect_report.RESULTS} and {a.results / detect_report.DOCUMENT}")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The retraining proof (issue 15): a small CLIP trained from scratch on a CLIP-Backdoor-poisoned image-text
corpus (WebDataset shards of CIFAR-10 train with template captions) carries the backdoor; score_corpus with a
DeDe decoder for it finds the poisoned pairs; the same recipe retrained on the job's clean/ shards does not.
Beside it: a CLIP on the truly clean corpus, one after the best density baseline's removal, one after a
random removal (control). Writes the `retrain` section of RESULTS/results.json and RESULTS/retrain.md.

  lab_retrain.py --threads 1                        # everything (cached: a rerun recomputes nothing)
  lab_retrain.py --arms clean_reference --threads 1 # fill the cache with one arm (a second process, core)
  lab_retrain.py --render                           # retrain.md from results.json only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402
from pipeline.dede.model import PRESETS  # noqa: E402
from pipeline.detect.spec import plan_detectors  # noqa: E402
from pipeline.lab import detect, detect_report, retrain  # noqa: E402
from pipeline.lab.clip_train import ClipConfig  # noqa: E402
from pipeline.lab.compute import setup  # noqa: E402
from pipeline.lab.detect_data import AUX_SETS  # noqa: E402
from pipeline.lab.triggers import load_trigger  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    d = retrain.RetrainSettings()
    c = d.clip
    ap = cli.parser(__doc__)
    ap.add_argument("--share", type=cli.positive_float, default=d.share, help="poisoned share of the pairs")
    ap.add_argument("--target", type=int, default=d.target, help="target class (0 = airplane)")
    ap.add_argument("--trigger", default=None, help="trigger .npz (default: an 8 px checkerboard at the centre)")
    ap.add_argument("--limit", type=cli.positive_int, default=None, help="a seeded subset of this many train pairs")
    ap.add_argument("--epochs", type=cli.positive_int, default=c.epochs, help="CLIP epochs (every arm)")
    ap.add_argument("--max-minutes", type=cli.positive_float, default=c.max_minutes, help="CLIP training budget")
    ap.add_argument("--clip-batch-size", type=cli.positive_int, default=c.batch)
    ap.add_argument("--lr", type=cli.positive_float, default=c.lr)
    ap.add_argument("--aux", nargs="+", choices=[retrain.CORPUS_AUX, *AUX_SETS], default=list(d.aux),
                    help="auxiliary sets of the decoders (the first one's run is what the arms remove): corpus "
                         "(the training corpus itself), ood (Tiny-ImageNet), id (CIFAR-10 train)")
    ap.add_argument("--baseline", default=None,
                    help="density detector of the baseline arm (default: the k-distance/SLOF/DAO detector with the "
                         f"best mean AUC in RESULTS/results.json, else {retrain.FALLBACK_BASELINE})")
    ap.add_argument("--reference-seeds", nargs="*", type=int, default=list(d.reference_seeds),
                    help="CLIP seeds of extra clean references (the chance spread of a clean CLIP's ASR)")
    ap.add_argument("--random-share", type=cli.positive_float, default=d.random_share, help="the control arm's removal")
    ap.add_argument("--arms", nargs="+", choices=retrain.ARMS, default=list(retrain.ARMS),
                    help="train only these arms (cache filling); results are written when all ran")
    ap.add_argument("--preset", choices=list(PRESETS), default="small", help="decoder size")
    ap.add_argument("--decoder-epochs", type=cli.positive_int, default=20)
    ap.add_argument("--decoder-trim", type=float, default=0.0,
                    help="decoders leave out this share of each batch's highest-error images (train_decoder --trim)")
    ap.add_argument("--bank-trim", type=float, default=detect.Settings.bank_trim,
                    help="score runs leave this share of the bank's most outlying rows out "
                         "(score_corpus --bank-trim; default %(default)s, the product's)")
    ap.add_argument("--max-aux", type=cli.positive_int, default=10000, help="decoder training on the first N aux samples")
    ap.add_argument("--threshold", default="fpr:0.01", help="score_corpus --threshold")
    ap.add_argument("--detectors", nargs="+", default=["all"], help="score_corpus --detectors")
    ap.add_argument("--flag-by", default=plan_detectors().flag_by,
                    help=f"score_corpus --flag-by: what clean/ leaves out (default: the job's, {plan_detectors().flag_by})")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder of results.json and retrain.md")
    ap.add_argument("--render", action="store_true", help="only regenerate retrain.md from results.json")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    cli.add_device(ap)
    return ap


def run(a: argparse.Namespace) -> None:
    if a.render:
        out = a.results / "retrain.md"
        out.write_text(retrain.render(detect_report.load(a.results)))
        print(f"wrote {out}")
        return
    device = setup(a.device, a.threads)
    baseline = a.baseline or retrain.best_density_baseline(detect_report.load(a.results)) or retrain.FALLBACK_BASELINE
    rs = retrain.RetrainSettings(share=a.share, target=a.target, limit=a.limit, random_share=a.random_share,
                                 aux=tuple(a.aux), baseline=baseline, seed=a.seed,
                                 reference_seeds=tuple(a.reference_seeds),
                                 clip=ClipConfig(epochs=a.epochs, max_minutes=a.max_minutes, batch=a.clip_batch_size,
                                                 lr=a.lr, seed=a.seed))
    ds = detect.Settings(preset=a.preset, epochs=a.decoder_epochs, max_aux=a.max_aux, trim=a.decoder_trim,
                         bank_trim=a.bank_trim, threshold=a.threshold,
                         detectors=tuple(a.detectors), flag_by=a.flag_by, device=a.device, threads=a.threads,
                         progress=not a.no_progress)
    section = retrain.run_proof(rs, ds, device, load_trigger(a.trigger) if a.trigger else None, arms=tuple(a.arms))
    if section is None:
        print(f"trained {', '.join(a.arms)} (cached); run without --arms to write the results")
        return
    top = detect_report.meta(a.argv, "jobs/lab_retrain.py")
    retrain.write(a.results, section, top)
    print(f"wrote {a.results / detect_report.RESULTS} (retrain) and {a.results / 'retrain.md'}")


def main(argv: list[str] | None = None) -> int:
    return cli.main_recorded(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of score_corpus vs a plain single-process loop, measured in one run on the same shards.

    .venv/bin/python bench/throughput.py --work /tmp/dede-bench --batch-size 256 --write bench/results.md

Both sides use the same encoder + decoder (a seeded resnet18-cifar checkpoint and a decoder with the
default architecture, one short epoch of training: weights do not change the cost), the same batch
size, the same image decode (pipeline.corpus.decode.load_sample_image) and `Scorer.score`.
The plain loop: webdataset.WebDataset over the shards (raw bytes, no auto-decoding), decode, batch,
score; it writes nothing. The job: jobs/score_corpus.py's run_job on an already started local Ray
(Ray start-up is timed separately), writing every output (Parquet, clean/quarantine tars, stats).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402


def prepare(work: Path, encoder_name: str, n_shards_size: int) -> tuple[list[str], str]:
    """The CIFAR-10 test shards and a trained decoder under `work` (made once): (shard URLs, decoder folder)."""
    import torch

    from pipeline.checkpoints import save_safetensors
    from pipeline.corpus.ingest import cifar10_samples, write_shards
    from pipeline.corpus.shards import expand_shards
    from pipeline.dede.train import TrainConfig, train_decoder
    from pipeline.encoders import create_encoder

    shards = work / "cifar10-test"
    if not (shards / "000000.tar").exists():
        write_shards(iter(cifar10_samples("test")), str(shards), shard_size=n_shards_size)
    dec = work / f"decoder-{encoder_name}"
    if not (dec / "config.json").exists():
        torch.manual_seed(0)
        enc = create_encoder(f"resnet:{encoder_name}", "cpu")
        ckpt = work / f"{encoder_name}.safetensors"
        save_safetensors(enc.backbone.state_dict(), str(ckpt))
        aux = work / "aux"
        if not (aux / "000000.tar").exists():
            write_shards(iter(cifar10_samples("train")[:512]), str(aux), shard_size=512)
        train_decoder(TrainConfig(encoder=f"resnet:{encoder_name}@{ckpt}", data=[str(aux)], out=str(dec),
                                  epochs=1, batch_size=64, device="cpu", progress=False))
    return expand_shards(str(shards)), str(dec)


def plain_loop(urls: list[str], decoder: str, batch_size: int) -> tuple[int, float]:
    """Score the shards in one process with webdataset: (samples scored, seconds)."""
    import numpy as np
    import webdataset as wds

    from pipeline.corpus.decode import DecodeError, load_sample_image
    from pipeline.dede.scorer import Scorer

    t0 = time.perf_counter()
    scorer = Scorer(decoder, device="cpu")
    size = scorer.work_size
    n, imgs, keys = 0, [], []
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False)   # raw bytes: no decoders, no pickle
    for sample in ds:
        fields = {k: v for k, v in sample.items() if not k.startswith("__")}
        try:
            imgs.append(load_sample_image(fields, size))
        except DecodeError:
            continue
        keys.append(sample["__key__"])
        if len(imgs) == batch_size:
            scorer.score(np.stack(imgs), keys)
            n += len(imgs)
            imgs, keys = [], []
    if imgs:
        scorer.score(np.stack(imgs), keys)
        n += len(imgs)
    return n, time.perf_counter() - t0


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--work", default="/tmp/dede-bench")
    ap.add_argument("--encoder", default="resnet18-cifar")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus-per-actor", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2); both sides run on the CPU")
    ap.add_argument("--max-shards", type=int, default=None, help="first N shards only")
    ap.add_argument("--plain-after", action="store_true",
                    help="run the plain loop again after the job (A-B-A: exposes drift in machine load)")
    ap.add_argument("--write", default=None, help="write the results as markdown here")
    return ap


def run(a: argparse.Namespace) -> None:
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(a.threads)
    urls, decoder = prepare(work, a.encoder, a.shard_size)
    urls = urls[: a.max_shards] if a.max_shards else urls

    n_plain, s_plain = plain_loop(urls, decoder, a.batch_size)
    n_first, s_first = n_plain, s_plain
    print(f"plain loop: {n_plain} samples in {s_plain:.1f} s = {n_plain / s_plain:.1f} samples/s", flush=True)

    import ray

    from pipeline.job.config import JobConfig
    from pipeline.job.run import run_job

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    s_ray = time.perf_counter() - t0
    out = work / "job-out"
    cfg = JobConfig(inputs=[str(work / "cifar10-test")], out=str(out), decoder=decoder, batch_size=a.batch_size,
                    actors=a.actors, cpus_per_actor=a.cpus_per_actor, threads=a.threads, overwrite=True,
                    progress=False, max_shards=a.max_shards, detectors=["dede"])   # like the plain loop: DeDe only
    t0 = time.perf_counter()
    run = run_job(cfg)
    s_job = time.perf_counter() - t0
    ray.shutdown()
    n_job = run["totals"]["read"]
    after = ""
    if a.plain_after:
        n2, s2 = plain_loop(urls, decoder, a.batch_size)
        print(f"plain loop again: {n2} samples in {s2:.1f} s = {n2 / s2:.1f} samples/s", flush=True)
        after = f"| plain loop again, after the job | {n2} | {s2:.1f} | {n2 / s2:.1f} |\n"
        n_plain, s_plain = n_plain + n2, s_plain + s2      # the ratio uses both plain runs
    ratio = (n_job / s_job) / (n_plain / s_plain)
    res = {"plain_samples": n_plain, "plain_s": s_plain, "plain_sps": n_plain / s_plain,
           "job_samples": n_job, "job_s": s_job, "job_sps": n_job / s_job, "ray_init_s": s_ray,
           "job_sps_incl_ray_init": n_job / (s_job + s_ray), "ratio": ratio}
    print(json.dumps(res, indent=2))
    if a.write:
        cmd = " ".join(["bench/throughput.py", *sys.argv[1:]])
        load = os.getloadavg()
        Path(a.write).write_text(f"""# score_corpus throughput vs a plain loop

Command: `.venv/bin/python {cmd}`

Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, shared with other
jobs (load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}), so absolute numbers are noisy;
both sides ran back to back in one process. Data: CIFAR-10 test split, {len(urls)} shards of {a.shard_size}
JPEGs (32x32){f", first {len(urls)} shards" if a.max_shards else ""}. Model: resnet:{a.encoder} (seeded checkpoint) + DeDe decoder (default architecture),
batch size {a.batch_size}, {a.threads} torch threads.

| | samples | seconds | samples/s |
|---|---:|---:|---:|
| plain loop (webdataset, one process, scores only, writes nothing) | {n_first} | {s_first:.1f} | {n_first / s_first:.1f} |
| score_corpus job ({a.actors} actor x {a.cpus_per_actor:g} CPU, {a.threads} threads; writes all outputs) | {n_job} | {s_job:.1f} | {n_job / s_job:.1f} |
| job including `ray.init` ({s_ray:.1f} s) | {n_job} | {s_job + s_ray:.1f} | {n_job / (s_job + s_ray):.1f} |
{after}
**Ratio job / plain loop{" (both plain runs pooled)" if a.plain_after else ""}: {ratio:.2f}** (including Ray start-up: {(n_job / (s_job + s_ray)) / (n_plain / s_plain):.2f}).
The job's time includes starting the actor (loading encoder + decoder), reading, decoding, scoring and
writing scores/, clean/, quarantine/ and stats/ for every shard plus run.json.
""")


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

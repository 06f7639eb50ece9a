"""The throughput benchmark: score_corpus against the compute limit and a plain loop, at 32 px and 224 px,
in one run on one machine; writes OUT/results.json and OUT/results.md (generated from the json).

    .venv/bin/python bench/throughput.py --out bench                   # both sizes, this machine's CPU
    .venv/bin/python bench/throughput.py --out bench --device cuda     # the same on a GPU (bf16 autocast)
    .venv/bin/python bench/throughput.py --out /tmp/b --tiny           # seconds: small models, a few images

Per size, the same encoder + decoder (seeded weights, one short training epoch: weights do not change the
cost), the same batch size and `Scorer.score`:
- embed: the encoder alone on pre-decoded uint8 tensors (no I/O);
- compute: encoder + decoder on the same tensors: the limit the job can reach;
- plain: webdataset.WebDataset over the shards in one process (raw bytes), decode, batch, score, no writes;
- job: pipeline.job.run.run_job (DeDe only) on a started local Ray, writing every output.
32 px: CIFAR-10 test shards, resnet:resnet18-cifar and the default (paper) decoder. 224 px: COCO-mini's
full-size photos (about 640x480, CC3M-like), openclip:ViT-B-16 (random init) and the decoder train_decoder
picks for it (224 px, 16 px patches). Also: JPEG decode to the working size per core (PIL in full vs
PIL's draft mode, the job's path) and the job's peak RSS (driver, Ray and workers) at N and 4N shards.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "data" / "coco-mini" / "coco-mini-captions.tar.gz"
TARGETS = {"job_over_compute": 0.90, "job_over_plain": 1.0, "compute_over_embed": 0.65, "rss_growth": 1.1}
H100_BF16_TFLOPS = 989.0        # dense bf16 peak of an H100 SXM (NVIDIA's datasheet)
PROJECTION_UTILISATION = 0.3    # the share of that peak the projection assumes
CC3M = 3_300_000


@dataclass(frozen=True)
class Size:
    """One benchmarked size: encoder spec, decoder preset, shards, images per shard, batch size."""

    encoder: str
    preset: str
    shards: int
    per_shard: int
    batch_size: int


FULL = {"32": Size("resnet:resnet18-cifar", "paper", 2, 500, 256), "224": Size("openclip:ViT-B-16", "paper", 2, 80, 32)}
TINY = {"32": Size("resnet:resnet18-cifar-w0.125", "tiny", 1, 40, 16), "224": Size("resnet:resnet18", "tiny", 2, 8, 8)}
RSS_FACTOR = 4


def cifar_samples(n: int) -> list[tuple[str, dict[str, bytes]]]:
    from pipeline.corpus.ingest import cifar10_samples

    return cifar10_samples("test")[:n]


def coco_samples(n: int) -> list[tuple[str, dict[str, bytes]]]:
    """`n` full-size COCO-mini photos (repeated under new keys when n > 159), read from the archive in
    memory (member names are data: nothing is extracted)."""
    photos = []
    with tarfile.open(COCO) as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".jpg"):
                photos.append(tar.extractfile(m).read())
    if not photos:
        raise ValueError(f"no JPEGs in {COCO}")
    return [(f"coco{i:06d}", {"jpg": photos[i % len(photos)], "txt": b"a photo"}) for i in range(n)]


def prepare(work: Path, name: str, size: Size, shards: int, device: str) -> tuple[list[str], str]:
    """Shards (`shards` of size.per_shard images) and a decoder for this size under `work`, made once."""
    import torch

    from pipeline.checkpoints import save_safetensors
    from pipeline.corpus.ingest import write_shards
    from pipeline.corpus.shards import expand_shards
    from pipeline.dede.train import TrainConfig, train_decoder
    from pipeline.encoders import create_encoder

    samples = cifar_samples if name == "32" else coco_samples
    folder = work / f"shards-{name}-{shards}x{size.per_shard}"
    if not (folder / "000000.tar").exists():
        write_shards(iter(samples(shards * size.per_shard)), str(folder), shard_size=size.per_shard)
    safe = size.encoder.replace(":", "-")
    dec = work / f"decoder-{safe}-{size.preset}"
    if not (dec / "config.json").exists():
        torch.manual_seed(0)
        enc = create_encoder(size.encoder, "cpu")
        ckpt = work / f"{safe}.safetensors"
        save_safetensors(enc.backbone.state_dict(), str(ckpt))
        aux = work / f"aux-{name}"
        if not (aux / "000000.tar").exists():
            write_shards(iter(samples(64)), str(aux), shard_size=64)
        train_decoder(TrainConfig(encoder=f"{size.encoder}@{ckpt}", data=[str(aux)], out=str(dec), epochs=1,
                                  batch_size=16, model=size.preset, device=device, progress=False))
    return expand_shards(str(folder)), str(dec)


def decoded(urls: list[str], work_size: int) -> tuple["np.ndarray", list[str]]:
    """Every image of the shards at the working size, and their keys (untimed: the compute runs' input)."""
    import numpy as np

    from pipeline.corpus.decode import load_sample_image
    from pipeline.corpus.reader import iter_shard

    images, keys = [], []
    for url in urls:
        for s in iter_shard(url):
            images.append(load_sample_image(s.fields, work_size))
            keys.append(s.key)
    return np.stack(images), keys


def timed_batches(fn, images, keys, batch_size: int) -> float:
    """Samples/s of `fn(batch, keys)` over the images, after one warm-up batch."""
    fn(images[:batch_size], keys[:batch_size])
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        fn(images[i:i + batch_size], keys[i:i + batch_size])
    return len(images) / (time.perf_counter() - t0)


def plain_loop(urls: list[str], scorer, batch_size: int) -> float:
    """Samples/s of one process scoring the shards through webdataset (decode, batch, score, no writes)."""
    import numpy as np
    import webdataset as wds

    from pipeline.corpus.decode import DecodeError, load_sample_image

    t0 = time.perf_counter()
    n, imgs, keys = 0, [], []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):   # raw bytes: no decoders, no pickle
        try:
            imgs.append(load_sample_image({k: v for k, v in sample.items() if not k.startswith("__")}, scorer.work_size))
        except DecodeError:
            continue
        keys.append(sample["__key__"])
        if len(imgs) == batch_size:
            scorer.score(np.stack(imgs), keys)
            n, imgs, keys = n + len(imgs), [], []
    if imgs:
        scorer.score(np.stack(imgs), keys)
        n += len(imgs)
    return n / (time.perf_counter() - t0)


class PeakRss:
    """The job's peak RSS (MB), sampled every 0.2 s while in use: this process's growth since entry (the job's
    driver; what the benchmark itself already holds is left out) plus all its descendants (Ray's processes and
    workers)."""

    def __enter__(self) -> PeakRss:
        import psutil

        self.peak, self._stop = 0.0, threading.Event()
        me = psutil.Process()
        base = me.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(0.2):
                total = max(0, me.memory_info().rss - base)
                for p in me.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_job(urls: list[str], decoder: str, out: Path, size: Size, device: str,
            threads: int) -> tuple[float, float, float]:
    """score_corpus over the shards (DeDe only, every output written): (samples/s over the call's wall time,
    samples/s over the actor's time on the shards (its start-up left out), peak RSS MB)."""
    from pipeline.job.config import JobConfig
    from pipeline.job.run import run_job as job

    gpu = device.startswith("cuda")
    cfg = JobConfig(inputs=urls, out=str(out), decoder=decoder, batch_size=size.batch_size, actors=1,
                    cpus_per_actor=1.0 if gpu else float(threads), gpus_per_actor=1.0 if gpu else 0.0, threads=threads,
                    overwrite=True, progress=False, report=False, detectors=["dede"])
    with PeakRss() as rss:
        t0 = time.perf_counter()
        run = job(cfg)
        seconds = time.perf_counter() - t0
    busy = sum(json.loads((out / "stats" / f"{s['stem']}.json").read_text())["timings"]["total_s"] for s in run["shards"])
    return run["totals"]["read"] / seconds, run["totals"]["read"] / busy, rss.peak


def decode_rates(urls: list[str], work_size: int, repeat: int) -> dict[str, float]:
    """Images/s on one core decoding the shards' JPEGs to the working size: PIL in full, and with draft mode."""
    from pipeline.corpus.decode import decode_image, image_bytes, resize_center_crop
    from pipeline.corpus.reader import iter_shard

    blobs = [image_bytes(s.fields) for url in urls for s in iter_shard(url)]
    out = {}
    for name, draft in (("pil_full", None), ("pil_draft", work_size)):
        t0 = time.perf_counter()
        for _ in range(repeat):
            for b in blobs:
                resize_center_crop(decode_image(b, draft_size=draft), work_size)
        out[name] = len(blobs) * repeat / (time.perf_counter() - t0)
    return out


def flops_per_sample(scorer) -> float:
    """Forward FLOPs of encoder + decoder for one image at the working size (torch's FLOP counter)."""
    import numpy as np
    from torch.utils.flop_counter import FlopCounterMode

    image = np.zeros((1, scorer.work_size, scorer.work_size, 3), np.uint8)
    with FlopCounterMode(display=False) as counter:
        scorer.score(image, ["k"])
    return float(counter.get_total_flops())


def bench_size(name: str, size: Size, work: Path, device: str, threads: int, log) -> dict:
    """Every figure of one size."""
    import torch

    from pipeline.dede.scorer import Scorer

    urls, decoder = prepare(work, name, size, size.shards, device)
    scorer = Scorer(decoder, device=device)
    images, keys = decoded(urls, scorer.work_size)
    embed = timed_batches(lambda x, k: scorer.encoder.embed(torch.as_tensor(x).to(scorer.device)), images, keys,
                          size.batch_size)
    compute = timed_batches(scorer.score, images, keys, size.batch_size)
    plain = plain_loop(urls, scorer, size.batch_size)
    job, steady, rss = run_job(urls, decoder, work / f"job-{name}", size, device, threads)
    cfg = scorer.model.cfg
    res = {"encoder": size.encoder, "decoder": {"preset": size.preset, "image_size": cfg.image_size,
                                                "patch_size": cfg.patch_size, "tokens": cfg.num_patches},
           "work_size": scorer.work_size, "samples": len(keys), "shards": len(urls), "batch_size": size.batch_size,
           "embed_sps": embed, "compute_sps": compute, "plain_sps": plain, "job_sps": job, "job_steady_sps": steady,
           "job_peak_rss_mb": rss, "job_over_compute": job / compute, "job_over_plain": job / plain,
           "compute_over_embed": compute / embed, "job_steady_over_compute": steady / compute,
           "flops_per_sample": flops_per_sample(scorer),
           "decode_per_core": decode_rates(urls, scorer.work_size, 1 if name == "224" else 3)}
    log(f"bench {name} px: embed {embed:.1f}, compute {compute:.1f}, plain {plain:.1f}, job {job:.1f} samples/s")
    return res


def rss_growth(size: Size, work: Path, device: str, threads: int) -> dict:
    """The job's peak RSS at N and RSS_FACTOR x N shards of the 32 px size, run back to back."""
    n = size.shards
    urls, decoder = prepare(work, "32", size, n * RSS_FACTOR, device)
    peaks = [run_job(urls[:count], decoder, work / f"job-32-rss-{count}", size, device, threads)[2]
             for count in (n, n * RSS_FACTOR)]
    return {"shards": [n, n * RSS_FACTOR], "peak_rss_mb": peaks, "ratio": peaks[1] / peaks[0]}


def machine(device: str, threads: int) -> dict:
    import torch

    from pipeline.lab.cache import cpu_model

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "device": device, "gpu": gpu, "load_average": [round(v, 2) for v in os.getloadavg()]}


def projection(flops: float) -> dict:
    """Minutes for CC3M on one H100 from FLOPs alone, at an assumed utilisation: a projection, not a measurement."""
    sps = H100_BF16_TFLOPS * 1e12 * PROJECTION_UTILISATION / flops
    return {"what": f"FLOP-based projection, not a measurement: {H100_BF16_TFLOPS:g} TFLOP/s bf16 dense peak x "
                    f"{PROJECTION_UTILISATION:g} utilisation / measured FLOPs per sample; ignores decode and I/O",
            "samples_per_s": sps, "cc3m_minutes": CC3M / sps / 60}


def render(res: dict) -> str:
    """results.md from results.json alone."""
    rows = []
    for name, r in res["sizes"].items():
        d = r["decoder"]
        rows.append(f"| {name} px | `{r['encoder']}` + {d['preset']} decoder ({d['image_size']} px, {d['tokens']} patches) "
                    f"| {r['samples']} | {r['embed_sps']:.1f} | {r['compute_sps']:.1f} | {r['plain_sps']:.1f} "
                    f"| {r['job_sps']:.1f} | {r['job_steady_sps']:.1f} | {r['job_over_compute']:.2f} "
                    f"| {r['job_steady_over_compute']:.2f} | {r['job_over_plain']:.2f} | {r['compute_over_embed']:.2f} |")
    t, m, g = res["targets"], res["machine"], res["rss"]
    dec = res["sizes"]["224"]["decode_per_core"]
    marks = "\n".join(f"- `{k}` {v['value']:.2f} (target {'<=' if k == 'rss_growth' else '>='} {v['target']}): "
                      f"{'met' if v['met'] else '**missed**'}" for k, v in t.items())
    p = res.get("projection")
    proj = (f"\n## Projection for CC3M (3.3 M samples) on one H100\n\n{p['what']}: {p['samples_per_s']:.0f} samples/s, "
            f"{p['cc3m_minutes']:.1f} minutes.\n" if p else "")
    return f"""# Throughput: score_corpus against the compute limit and a plain loop

<!-- generated by bench/throughput.py from results.json; do not edit -->

- command: `{res['command']}`
- commit: `{res['commit']}`
- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} with {m['torch_threads']} threads, device {m['device']}{', ' + m['gpu'] if m['gpu'] else ''}; load average at the end {' / '.join(str(v) for v in m['load_average'])}
- finished: {res['finished']}

Samples/s. embed: the encoder alone on pre-decoded tensors; compute: encoder + decoder on the same tensors
(no I/O); plain: one process, webdataset, decode + score, writes nothing; job: score_corpus (DeDe only, 1 actor),
every output written, over the call's wall time (Ray Data's and the actor's start-up included: a fixed cost
these small runs do not amortise); job steady: the same samples over the actor's time on its shards.
The targets are judged on the wall-time figures.

| size | models | samples | embed | compute | plain | job | job steady | job / compute | job steady / compute | job / plain | compute / embed |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

Targets (the top-level figures are the 224 px ones; RSS growth is the 32 px job's peak RSS at {g['shards'][1]} shards over {g['shards'][0]}):

{marks}

JPEG decode to the working size, one core, on the 224 px set's photos: PIL in full {dec['pil_full']:.1f} images/s,
PIL draft mode (the job's path) {dec['pil_draft']:.1f} images/s.

Peak RSS of the job (the driver's growth, Ray and its workers), two runs back to back: {g['peak_rss_mb'][0]:.0f} MB
at {g['shards'][0]} shards, {g['peak_rss_mb'][1]:.0f} MB at {g['shards'][1]}.
{proj}"""


def build_parser() -> argparse.ArgumentParser:
    ap = cli.parser(__doc__)
    ap.add_argument("--out", default="bench", help="folder for results.json and results.md")
    ap.add_argument("--work", default="/tmp/dede-bench", help="scratch folder for shards, decoders and job outputs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=cli.positive_int, default=os.cpu_count() or 1, help="torch threads (all sides)")
    ap.add_argument("--tiny", action="store_true", help="small models and a few images (seconds; the test's run)")
    return ap


def run(a: argparse.Namespace) -> None:
    import ray
    import torch

    from pipeline.lab.detect_report import git_commit

    torch.set_num_threads(a.threads)
    sizes = TINY if a.tiny else FULL
    work = Path(a.work) / ("tiny" if a.tiny else "full")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = not ray.is_initialized()          # a caller's Ray (a test session's) is used and left running
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    try:
        results = {name: bench_size(name, size, work, a.device, a.threads, print) for name, size in sizes.items()}
        rss = rss_growth(sizes["32"], work, a.device, a.threads)
    finally:
        if started:
            ray.shutdown()
    top = results["224"]
    values = {k: top[k] for k in ("job_over_compute", "job_over_plain", "compute_over_embed")}
    values["rss_growth"] = rss["ratio"]
    targets = {k: {"value": v, "target": TARGETS[k], "met": v <= TARGETS[k] if k == "rss_growth" else v >= TARGETS[k]}
               for k, v in values.items()}
    commit, _ = git_commit(ROOT)
    res = {"command": " ".join(["bench/throughput.py", *sys.argv[1:]]), "commit": commit,
           "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(a.device, a.threads),
           "ray_init_s": ray_init_s, "sizes": results, **values, "rss": rss, "targets": targets,
           "projection": None if a.device.startswith("cuda") else projection(top["flops_per_sample"])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "results.md").write_text(render(res))
    print(json.dumps({k: res[k] for k in ("job_over_compute", "job_over_plain", "compute_over_embed")}, indent=1))


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Detection on the lab's real backdoored encoders, through the product's own path (issue 13, items 1-3, 7).

Per attack: the victim is the newest implanted cached card (`resolve_victims`); its trigger and target are
the card's. Per victim x auxiliary set: one decoder trained by `pipeline.dede.train.train_decoder`, then
each test pool scored by `pipeline.job.run.run_job` (DeDe plus, where the job offers them, the embedding
detectors), and the metrics of `pipeline.detect.metrics.summary` per pool x detector. Pools and
auxiliary sets (pipeline.lab.detect_data), decoders and score runs are cached under the lab cache by
config hash, so a rerun with the same flags recomputes nothing. The downstream probe builds on these
decoders (pipeline.lab.downstream). results.json and its markdown: pipeline.lab.detect_report.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.dede.config import load_decoder_config
from pipeline.dede.model import DeDeConfig
from pipeline.dede.thresholds import parse_threshold
from pipeline.dede.train import QUANTILE_HOLDOUT, STATE, TrainConfig, train_decoder
from pipeline.detect.ensemble import DEFAULT_FUSION
from pipeline.detect.metrics import summary
from pipeline.detect.spec import DEFAULT_ENSEMBLE
from pipeline.encoders import parse_spec
from pipeline.errors import BadInput
from pipeline.job.config import DEFAULT_BANK_TRIM, JobConfig
from pipeline.job.console import start_ray
from pipeline.job.run import run_job
from pipeline.lab.attacks import ATTACKS, IMPLANTED, trigger_for
from pipeline.lab.cache import Entry, cache_dir
from pipeline.lab.cifar import load_split
from pipeline.lab.detect_data import (CALIBRATION_POOL, POOLS, VALIDATION_POOLS, ShardSet, detect_cache, ensure_aux,
                                      ensure_pool, file_sha256, unseen_by_decoders)
from pipeline.lab.triggers import Trigger, trigger_hash

DEFAULT_ATTACKS = ("badencoder", "drupe", "clip-backdoor", "badclip", "ctrl")
DEFAULT_AUX = "id"
CARRY = ["poisoned", "label"]
EMBEDDING = "embedding"
DECODER_FORMAT = 6
"""Bumped when what a cached decoder means changes beyond the config its hash reads (3: decoders hash their resolved
architecture, so a preset's new default needs no bump; 4: bumped with the score runs' FORMAT 4; 5: the reference holds
the hold-out's occlusion scores; 6: and transplant's recipients and hold-out scores)."""
FORMAT = 7
"""Bumped when what a cached score run means changes beyond the config its hash reads (4: the bank's two disjoint
halves, one for the bank detectors and one for the in-corpus pseudo-corpus; 5: `all` computes dede-region too; 6: and
occlusion; 7: and transplant)."""
REDETECTED = "lab-redetected.json"   # in a score run whose detector phase ran on another run's scores
Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# Victims
# ---------------------------------------------------------------------------------------------

@dataclass
class Victim:
    """An attacked encoder with the trigger and target its attack used."""

    attack: str
    spec: str
    card: dict[str, Any]
    folder: Path | None
    trigger: Trigger | None
    target: int
    weights_sha256: str

    @property
    def card_name(self) -> str | None:
        return self.folder.name if self.folder is not None else None

    @property
    def ca(self) -> float | None:
        return self.card.get("ca")

    @property
    def asr(self) -> float | None:
        return self.card.get("asr")


def implanted(card: dict[str, Any]) -> bool:
    """The card says the backdoor took: `implanted` true, or ASR at the lab's bar."""
    return bool(card.get("implanted")) or (card.get("asr") or 0.0) >= IMPLANTED


def entries(name: str) -> list[Entry]:
    """Every cached entry named `name` (weights present), newest first."""
    found = []
    for card_path in cache_dir().glob(f"{name}-*/card.json"):
        if (card_path.parent / "model.safetensors").exists():
            card = json.loads(card_path.read_text())
            if card.get("name", name) == name:
                found.append(Entry(card_path.parent, card))
    return sorted(found, key=lambda e: e.card.get("finished", ""), reverse=True)


def newest_implanted(attack: str) -> Entry | None:
    """The most recently finished cached card of `attack` whose backdoor is implanted."""
    return next((e for e in entries(attack) if implanted(e.card)), None)


def victim_trigger(attack: str, folder: Path | None) -> Trigger:
    """The trigger the attack recorded in its cache folder, else the attack's own (trigger_for)."""
    path = folder / "trigger.npz" if folder is not None else None
    return trigger_for(attack, str(path) if path is not None and path.exists() else None)


def victim_from_entry(attack: str, entry: Entry, trigger: bool = True) -> Victim:
    card = entry.card
    return Victim(attack, card["spec"], card, entry.folder, victim_trigger(attack, entry.folder) if trigger else None,
                  int(card.get("config", {}).get("target", 0)),
                  card.get("weights_sha256") or file_sha256(str(entry.weights)))


def victim_from_spec(attack: str, spec: str, trigger: bool = True) -> Victim:
    """--victim ATTACK=SPEC: an encoder spec (`lab:simclr-r18@.../model.safetensors`) or a cache folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "card.json").exists() or not (path / "model.safetensors").exists():
            raise BadInput(f"--victim {attack}={spec}: the folder holds no card.json + model.safetensors")
        return victim_from_entry(attack, Entry(path, json.loads((path / "card.json").read_text())), trigger)
    checkpoint = parse_spec(spec).checkpoint
    if not checkpoint or not Path(checkpoint).exists():
        raise BadInput(f"--victim {attack}={spec}: name a checkpoint that exists (KIND:NAME@FILE) or a cache folder")
    folder = Path(checkpoint).parent
    card_path = folder / "card.json"
    if card_path.exists():
        card = json.loads(card_path.read_text())
        if Path(card.get("spec", "@").split("@", 1)[-1]).resolve() == Path(checkpoint).resolve():
            return dataclasses.replace(victim_from_entry(attack, Entry(folder, card), trigger), spec=spec)
    return Victim(attack, spec, {}, None, victim_trigger(attack, None) if trigger else None, 0, file_sha256(checkpoint))


def parse_victims(items: list[str] | None) -> dict[str, str]:
    """`ATTACK=SPEC` items -> {attack: spec}; BadInput for a malformed item or an unknown attack."""
    out = {}
    for item in items or []:
        attack, sep, spec = item.partition("=")
        if not sep or not spec:
            raise BadInput(f"--victim {item!r}: use ATTACK=SPEC, e.g. badencoder=lab:simclr-r18@FILE")
        if attack not in ATTACKS:
            raise BadInput(f"--victim {item!r}: unknown attack {attack!r}; use one of {', '.join(ATTACKS)}")
        out[attack] = spec
    return out


def resolve_victims(attacks: list[str], overrides: dict[str, str]) -> dict[str, Victim | str]:
    """Per attack its victim, or the reason it is skipped (no implanted card in the cache)."""
    out: dict[str, Victim | str] = {}
    for attack in attacks:
        if attack in overrides:
            out[attack] = victim_from_spec(attack, overrides[attack])
            continue
        entry = newest_implanted(attack)
        if entry is None:
            found = entries(attack)
            why = (f"{len(found)} {attack} card(s), none implanted (ASR < {IMPLANTED:.0%}; newest {found[0].folder.name} "
                   f"ASR {found[0].card.get('asr', 0):.1%})" if found else f"no {attack} card in {cache_dir()}")
            out[attack] = f"no implanted victim in the lab cache ({why})"
        else:
            out[attack] = victim_from_entry(attack, entry)
    return out


def clean_simclr() -> Entry | None:
    """The newest cached clean SimCLR encoder (card stage `clean-simclr`)."""
    found = [Entry(c.parent, json.loads(c.read_text())) for c in cache_dir().glob("*/card.json")
             if (c.parent / "model.safetensors").exists()]
    found = [e for e in found if e.card.get("stage") == "clean-simclr"]
    return max(found, key=lambda e: e.card.get("finished", ""), default=None)


# ---------------------------------------------------------------------------------------------
# Settings, decoders and score runs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """The flags of a measurement: what changes results (hashed into the cache) and how to run."""

    preset: str = "small"
    epochs: int = 20
    max_aux: int | None = None
    batch_size: int = 256
    trim: float = 0.0
    train_mask_ratio: float | None = None          # None: the preset's (0.99)
    bank_trim: float = DEFAULT_BANK_TRIM
    pool_seed: int = 0
    pool_scale: float = 1.0
    threshold: str = "fpr:0.01"
    detectors: tuple[str, ...] = ("all",)
    flag_by: str | None = None
    ensemble: tuple[str, ...] | None = None      # the ensemble's members (None: the job's DEFAULT_ENSEMBLE)
    fusion: str | None = None                    # its rank fusion (None: the job's DEFAULT_FUSION)
    device: str = "auto"
    threads: int | None = None
    actors: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        parse_threshold(self.threshold)
        TrainConfig(encoder="", data=[], out="", trim=self.trim, model=self.model())   # bad decoder flags, likewise
        if not 0 < self.pool_scale <= 1:
            raise BadInput(f"--pool-scale must be in (0, 1], got {self.pool_scale}")
        JobConfig(**self.job_kwargs(["unused"], "unused", "unused")).validate()   # bad job flags fail before any work

    def job_kwargs(self, inputs: list[str], decoder: str, out: str) -> dict[str, Any]:
        """The JobConfig of one score run of this measurement."""
        import torch

        kwargs: dict[str, Any] = dict(inputs=inputs, decoder=decoder, out=out, threshold=self.threshold,
                                      batch_size=self.batch_size, actors=self.actors, threads=self.threads,
                                      store_embeddings=True, carry_fields=list(CARRY), report=False,
                                      progress=self.progress, detectors=self.job_detectors,
                                      flag_by=self.flag_by or "dede", bank_trim=self.bank_trim,
                                      gpus_per_actor=1.0 if self.device != "cpu" and torch.cuda.is_available() else 0.0)
        if self.ensemble:
            kwargs["ensemble"] = list(self.ensemble)
        if self.fusion:
            kwargs["fusion"] = self.fusion
        return kwargs

    @property
    def job_detectors(self) -> list[str]:
        """The detectors passed to the job."""
        return list(self.detectors)

    def record(self) -> dict[str, Any]:
        """What results.json records: the flags that change results."""
        return {"preset": self.preset, "epochs": self.epochs, "max_aux": self.max_aux, "batch_size": self.batch_size,
                "pool_seed": self.pool_seed, "pool_scale": self.pool_scale, "threshold": self.threshold,
                "detectors": self.job_detectors, "flag_by": self.flag_by, **self.trimmed(), **self.masked(),
                **self.bank_trimmed(), **self.fused()}

    def fused(self) -> dict[str, Any]:
        """The ensemble's members and fusion where they are not the job's defaults; {} otherwise (records as before
        the options existed)."""
        return {**({"ensemble": list(self.ensemble)} if self.ensemble else {}),
                **({"fusion": self.fusion} if self.fusion else {})}

    def model(self) -> DeDeConfig:
        """The decoders' architecture: the preset, with the training mask ratio asked for."""
        return DeDeConfig.preset(self.preset, **self.masked())

    def masked(self) -> dict[str, float]:
        """{"train_mask_ratio": r} when decoders train at another mask ratio than the preset's; {} otherwise (hashes
        and records as before the option existed)."""
        return {} if self.train_mask_ratio is None else {"train_mask_ratio": self.train_mask_ratio}

    def trimmed(self) -> dict[str, float]:
        """{"trim": share} when decoders train with a trimmed loss; {} otherwise, so untrimmed hashes and
        records stay what they were before the option existed."""
        return {"trim": self.trim} if self.trim else {}

    def bank_trimmed(self) -> dict[str, float]:
        """{"bank_trim": share} when the score runs trim the bank; {} otherwise (hashes and records as before the
        option existed: an entry without it was measured with the whole bank)."""
        return {"bank_trim": self.bank_trim} if self.bank_trim else {}


def _hash(config: dict[str, Any]) -> str:
    from pipeline.lab.cache import config_hash

    return config_hash(config)


def _device(settings: Settings) -> str | None:
    return None if settings.device == "auto" else settings.device


def decoder_config(victim_sha: str, aux: ShardSet, settings: Settings, seed: int) -> dict[str, Any]:
    return {"kind": "decoder", "victim": victim_sha, "aux": aux.name, "model": settings.model().to_dict(),
            "epochs": settings.epochs, "max_aux": settings.max_aux, "batch_size": settings.batch_size, "seed": seed,
            "format": DECODER_FORMAT, "quantile_holdout": QUANTILE_HOLDOUT, **settings.trimmed()}


def ensure_decoder(spec: str, victim_sha: str, aux: ShardSet, settings: Settings, seed: int = 0,
                   log: Log = print) -> tuple[Path, dict[str, Any], bool]:
    """The cached decoder of (victim, aux, settings, seed), trained first when absent (a half-trained one
    resumes). Returns (folder, what results.json records of it, cached)."""
    config = decoder_config(victim_sha, aux, settings, seed)
    folder = detect_cache() / f"decoder-{_hash(config)}"
    cached = (folder / "config.json").exists()
    if not cached:
        folder.mkdir(parents=True, exist_ok=True)
        train_decoder(TrainConfig(encoder=spec, data=[str(aux.folder)], out=str(folder), epochs=settings.epochs,
                                  batch_size=settings.batch_size, max_samples=settings.max_aux, subset="first", seed=seed,
                                  device=_device(settings), model=settings.model(), trim=settings.trim,
                                  resume=(folder / STATE).exists(), progress=settings.progress))
    dc = load_decoder_config(str(folder))
    t = dc.training
    info = {"folder": folder.name, "preset": settings.preset, "epochs": t.epochs, "batch_size": t.batch_size,
            **settings.trimmed(), **settings.masked(),
            "lr": t.lr, "seed": t.seed, "max_samples": t.max_samples, "n_train": dc.data.n_train,
            "n_holdout": dc.data.n_holdout, "final_loss": t.final_loss, "minutes": t.minutes, "device": t.device,
            "aux": aux.contents.get("aux"), "aux_folder": aux.name}
    log(f"  decoder {aux.contents.get('aux')}: {'cached' if cached else 'trained'} {folder.name} "
        f"({dc.data.n_train} train / {dc.data.n_holdout} hold-out, {t.epochs} epochs, {t.minutes} min)")
    return folder, info, cached


class LazyRay:
    """One local Ray for the whole command, started on the first score run that has work (run_job then
    reuses it), shut down at the end. With RAY_ADDRESS set, run_job connects there itself."""

    def __init__(self):
        self.started = False

    def ensure(self) -> None:
        if os.environ.get("RAY_ADDRESS"):
            return
        self.started = start_ray(None) or self.started

    def __enter__(self) -> "LazyRay":
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def run_config(decoder: Path, pool: ShardSet, settings: Settings) -> dict[str, Any]:
    return {"kind": "score", "decoder": decoder.name, "pool": pool.name, "threshold": settings.threshold,
            "detectors": settings.job_detectors, "flag_by": settings.flag_by,
            "ensemble": list(settings.ensemble or DEFAULT_ENSEMBLE), "fusion": settings.fusion or DEFAULT_FUSION,
            "format": FORMAT, **settings.bank_trimmed()}


def scored_sibling(decoder: Path, pool: ShardSet, images: tuple[str, ...]) -> Path | None:
    """A finished score run of `pool` with `decoder` that scored every image detector in `images`, whatever its other
    detectors: its stored scores, embeddings and image detector columns serve a run that differs only in its detector
    phase (score_corpus --redetect)."""
    import pyarrow.parquet as pq

    for run_file in sorted(detect_cache().glob("score-*/run.json")):
        config = json.loads(run_file.read_text()).get("config", {})
        if config.get("decoder") == str(decoder) and config.get("inputs") == [str(pool.folder)] and all(
                set(images) <= set(pq.read_schema(f).names) for f in (run_file.parent / "scores").glob("*.parquet")):
            return run_file.parent
    return None


def ensure_run(decoder: Path, pool: ShardSet, settings: Settings, ray: LazyRay,
               log: Log = print) -> tuple[Path, dict[str, Any], bool]:
    """The cached score run of `pool` with `decoder`, run with run_job first when absent (an unfinished one
    resumes). A run of the same decoder and pool with other detectors lends its scores: hard links to its files,
    and only the detector phase runs (--redetect). Returns (folder, run.json, cached)."""
    folder = detect_cache() / f"score-{_hash(run_config(decoder, pool, settings))}"
    run_file = folder / "run.json"
    if run_file.exists():
        return folder, json.loads(run_file.read_text()), True
    source = folder / REDETECTED
    cfg = JobConfig(**settings.job_kwargs([str(pool.folder)], str(decoder), str(folder)))
    sibling = None if folder.exists() else scored_sibling(decoder, pool, cfg.detector_plan().image_detectors)
    if sibling is not None:          # every file there is replaced whole (written to a temp name, then renamed)
        staging = folder.with_name(folder.name + ".linking")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(sibling, staging, copy_function=os.link, ignore=shutil.ignore_patterns("run.json", "report"))
        (staging / REDETECTED).write_text(json.dumps({"from": sibling.name}))
        staging.rename(folder)
        log(f"    the detectors again on the scores of {sibling.name}")
    ray.ensure()
    run = run_job(dataclasses.replace(cfg, redetect=source.exists()), log=lambda line: log(f"    {line}"))
    return folder, run, False


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

def result_key(name: str) -> str:
    """A detector's key in results.json: its name with - and : as _ (the Parquet column without `det_`)."""
    return name.replace("-", "_").replace(":", "_")


def detector_columns(run: dict[str, Any]) -> dict[str, tuple[str, float | None]]:
    """results key -> (Parquet column, the run's default threshold for it): what run.json's `detectors`
    records; DeDe (`score`) in a run without them is at the run's threshold."""
    out: dict[str, tuple[str, float | None]] = {"dede": ("score", float(run["threshold"]["value"]))}
    for name, info in (run.get("detectors") or {}).items():
        key = result_key(name)
        if info.get("column"):
            thr = info.get("threshold")
            out[key] = (info["column"], None if thr is None else float(thr))
    return out


def read_scores(run_dir: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """The named columns of a run's scores/*.parquet (with status and the carried ground truth `poisoned`);
    `embedding` comes as an (n, d) float32 matrix, NaN in rows without one."""
    import pyarrow.dataset as ds

    from pipeline.job.outputs import embedding_rows

    names = list(dict.fromkeys(["status", "poisoned", *columns]))
    table = ds.dataset(str(run_dir / "scores"), format="parquet").to_table(columns=names)
    out = {n: table.column(n).to_numpy(zero_copy_only=False) for n in names if n != EMBEDDING}
    if EMBEDDING in names:
        col = table.column(EMBEDDING)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        emb = np.full((len(col), col.type.list_size), np.nan, np.float32)
        emb[valid] = embedding_rows(col, valid)
        out[EMBEDDING] = emb
    return out


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}


def ground_truth(table: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ok rows, poisoned labels as bool): error rows and rows without ground truth are not ok."""
    ok = np.asarray(table["status"]) == "ok"
    raw = np.asarray(table["poisoned"], dtype=object)
    known = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in raw], bool)
    y = np.zeros(len(raw), bool)
    y[known] = np.asarray([bool(v) for v in raw[known]], bool)
    return ok & known, y


def pool_metrics(table: dict[str, np.ndarray], columns: dict[str, tuple[str, float | None]],
                 median_rule: bool) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Per detector the metrics.summary of its scores (AUC, TPR/FPR at its default threshold, oracle
    TPR at 1% FPR, and with `median_rule` the median rule), and the pool's counts (errors included)."""
    ok, y = ground_truth(table)
    counts = {"samples": int(len(ok)), "errors": int((np.asarray(table["status"]) != "ok").sum()),
              "poisoned": int((y & ok).sum()), "clean": int((~y & ok).sum())}
    out: dict[str, dict[str, Any]] = {}
    for key, (column, threshold) in columns.items():
        scores = np.asarray(table[column], dtype=np.float64)
        keep = ok & np.isfinite(scores)
        try:
            res = summary(y[keep], scores[keep], threshold, median_rule=median_rule)
        except ValueError as e:
            res = {"error": str(e)}
        if keep.sum() < ok.sum():
            res["nonfinite"] = int(ok.sum() - keep.sum())
        out[key] = _round(res)
    return out, counts


def clean_rates(table: dict[str, np.ndarray], columns: dict[str, tuple[str, float | None]]) -> dict[str, float | None]:
    """Per detector the share of (all-clean) ok rows above its default threshold: the realised FPR."""
    ok, _ = ground_truth(table)
    out = {}
    for key, (column, threshold) in columns.items():
        scores = np.asarray(table[column], dtype=np.float64)[ok]
        out[key] = None if threshold is None or not len(scores) else round(float((scores > threshold).mean()), 6)
    return out


def removal(table: dict[str, np.ndarray], flagged: np.ndarray) -> dict[str, int]:
    """How many poisoned and clean rows a flag vector removes, of how many."""
    ok, y = ground_truth(table)
    return {"poisoned": int((flagged & ok & y).sum()), "clean": int((flagged & ok & ~y).sum()),
            "poisoned_total": int((ok & y).sum()), "clean_total": int((ok & ~y).sum())}


def run_flags(run_dir: Path, run: dict[str, Any], extra: tuple[str, ...] = ()) -> tuple[
        dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per detector of a score run: AUC and what its default threshold removes; also the table (with the
    `extra` columns) and, per detector, the rows its threshold flags (none where it has no threshold)."""
    cols = detector_columns(run)
    table = read_scores(run_dir, [c for c, _ in cols.values()] + ["key", "flagged", *extra])
    ok, y = ground_truth(table)
    out: dict[str, Any] = {}
    flags: dict[str, np.ndarray] = {}
    for name, (col, thr) in cols.items():
        s = np.asarray(table[col], float)
        good = ok & np.isfinite(s)
        m = {k: round(v, 6) for k, v in summary(y[good], s[good], thr).items()}
        flags[name] = np.zeros(len(s), bool) if thr is None else np.nan_to_num(s, nan=-np.inf) > thr
        out[name] = {**m, "threshold": thr, **removal(table, flags[name])}
    return out, table, flags


# ---------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------

@dataclass
class AttackResult:
    """What one victim's measurement adds to results.json."""

    entry: dict[str, Any]
    minutes: float = 0.0
    cached: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def measure_victim(victim: Victim, aux_sets: list[str], settings: Settings, ray: LazyRay, log: Log = print,
                   pool_names: list[str] | tuple[str, ...] = POOLS) -> AttackResult:
    """Decoders per auxiliary set and score runs per pool for one victim, and their metrics."""
    t0 = time.time()
    pools = {p: ensure_pool(p, victim.trigger, victim.target, settings.pool_seed, settings.pool_scale)
             for p in (*POOLS, *VALIDATION_POOLS) if p in pool_names}
    for p, s in pools.items():
        log(f"  pool {p}: {'cached' if s.cached else 'written'} {s.name} ({s.contents['samples']} samples, "
            f"{s.contents['poisoned']} triggered)")
    detection: dict[str, dict[str, Any]] = {}
    runs: dict[str, dict[str, Any]] = {}
    decoders: dict[str, dict[str, Any]] = {}
    all_cached = all(s.cached for s in pools.values())
    for aux_name in aux_sets:
        aux = ensure_aux(aux_name, victim.trigger, victim.target, settings.pool_seed)
        log(f"  aux {aux_name}: {'cached' if aux.cached else 'written'} {aux.name} ({aux.contents['samples']} samples, "
            f"{aux.contents['poisoned']} triggered)")
        dec, info, dec_cached = ensure_decoder(victim.spec, victim.weights_sha256, aux, settings, 0, log)
        decoders[aux_name] = info
        detection[aux_name], runs[aux_name] = {}, {}
        all_cached &= aux.cached and dec_cached
        for p, pool in pools.items():
            if p in VALIDATION_POOLS and aux_name != DEFAULT_AUX:
                continue                                 # defaults are chosen with the default auxiliary set
            run_dir, run, run_cached = ensure_run(dec, pool, settings, ray, log)
            all_cached &= run_cached
            cols = detector_columns(run)
            metrics, counts = pool_metrics(read_scores(run_dir, [c for c, _ in cols.values()]), cols,
                                           p.removeprefix("val-") == "0.5")
            detection[aux_name][p] = metrics
            runs[aux_name][p] = {**counts, "run": run_dir.name, "pool": pool.name,
                                 "threshold": run["threshold"], "seconds": run.get("timing", {}).get("seconds")}
            d = metrics["dede"]
            log(f"  score {p} x {aux_name}: {'cached' if run_cached else 'scored'} {run_dir.name}: {counts['samples']} "
                f"samples, {counts['errors']} errors; DeDe AUC {d.get('auc', float('nan')):.3f} TPR "
                f"{d.get('tpr', float('nan')):.1%} FPR {d.get('fpr', float('nan')):.1%}"
                + (f", {len(metrics) - 1} more detectors" if len(metrics) > 1 else ""))
    minutes = round((time.time() - t0) / 60, 2)
    return AttackResult(attack_entry(victim, settings, detection, runs, decoders, minutes), minutes, all_cached)


def attack_entry(victim: Victim, settings: Settings, detection: dict[str, Any], runs: dict[str, Any],
                 decoders: dict[str, Any], minutes: float | None = None) -> dict[str, Any]:
    """One attack's block of results.json: the victim (card, CA, ASR, target, trigger), the settings, and per
    auxiliary set the metrics per pool x detector, the runs' counts and the decoder."""
    return {"victim": victim.spec, "card": victim.card_name, "clean_accuracy": victim.ca,
            "attack_success_rate": victim.asr, "implanted": implanted(victim.card), "target": victim.target,
            "trigger": trigger_hash(victim.trigger) if victim.trigger is not None else None,
            "weights_sha256": victim.weights_sha256, "settings": settings.record(), "detection": detection,
            "runs": runs, "decoders": decoders, "minutes_this_run": minutes}


def check_validation(settings: Settings, pools: list[str] | tuple[str, ...]) -> None:
    """A one-line error when validation pools are asked for with a --max-aux whose decoders would read them."""
    if any(p in VALIDATION_POOLS for p in pools):
        limit = unseen_by_decoders(len(load_split("train")[1]))
        if settings.max_aux is None or settings.max_aux > limit:
            raise BadInput(f"the validation pools hold CIFAR-10 train images no decoder reads only with --max-aux <= "
                           f"{limit}; got {settings.max_aux or 'all'}")


def measure(victims: dict[str, Victim | str], aux_sets: list[str], settings: Settings, log: Log = print,
            pools: list[str] | tuple[str, ...] = POOLS) -> dict[str, dict]:
    """results.json's `attacks` block for these victims: metrics, or `{"skipped": why}`."""
    check_validation(settings, pools)
    out: dict[str, dict] = {}
    with LazyRay() as ray:
        for attack, victim in victims.items():
            if isinstance(victim, str):
                log(f"{attack}: skipped: {victim}")
                out[attack] = {"skipped": victim}
                continue
            log(f"{attack}: victim {victim.card_name or victim.spec} (CA {_pct(victim.ca)}, ASR {_pct(victim.asr)}, "
                f"target {victim.target}, trigger {trigger_hash(victim.trigger)})")
            res = measure_victim(victim, aux_sets, settings, ray, log, pools)
            log(f"{attack}: done in {res.minutes} min{' (all cached)' if res.cached else ''}")
            out[attack] = res.entry
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def calibration_victim(spec: str | None, attacks: list[str] | None = None,
                       overrides: dict[str, str] | None = None) -> tuple[str, str | None, str]:
    """(spec, cache entry name, weights sha256) of the calibration's encoder: `spec`, else the newest clean
    SimCLR, else the first implanted victim of `attacks`."""
    if spec:
        v = victim_from_spec("badencoder", spec, trigger=False)
        return v.spec, v.card_name, v.weights_sha256
    entry = clean_simclr()
    if entry is not None:
        v = victim_from_entry("badencoder", entry, trigger=False)
        return v.spec, v.card_name, v.weights_sha256
    for attack in attacks or []:
        if attack in (overrides or {}):
            v = victim_from_spec(attack, overrides[attack], trigger=False)
            return v.spec, v.card_name, v.weights_sha256
        found = newest_implanted(attack)
        if found is not None:
            v = victim_from_entry(attack, found, trigger=False)
            return v.spec, v.card_name, v.weights_sha256
    raise BadInput(f"no clean SimCLR card (stage clean-simclr) nor an implanted victim of {', '.join(attacks or [])} "
                   f"in {cache_dir()}: pass --calibration-victim SPEC")


def measure_calibration(spec: str, card: str | None, sha: str, seeds: int, settings: Settings,
                        log: Log = print) -> dict[str, Any]:
    """Decoders with seeds 0..seeds-1 on the `id` set, each scoring the clean test pool: the FPR the
    threshold policy asked for against the FPR realised on clean data, per seed."""
    policy = parse_threshold(settings.threshold)
    aux = ensure_aux(DEFAULT_AUX, None, 0, settings.pool_seed)
    pool = ensure_pool(CALIBRATION_POOL, None, 0, settings.pool_seed, settings.pool_scale)
    log(f"calibration: victim {card or spec}, {seeds} seeds, aux {aux.name}, clean pool {pool.name} "
        f"({pool.contents['samples']} samples)")
    realised: list[float | None] = []
    per_detector: dict[str, list[float | None]] = {}
    thresholds, errors, samples, decoders = [], 0, 0, []
    with LazyRay() as ray:
        for seed in range(seeds):
            dec, info, _ = ensure_decoder(spec, sha, aux, settings, seed, log)
            run_dir, run, cached = ensure_run(dec, pool, settings, ray, log)
            cols = detector_columns(run)
            table = read_scores(run_dir, [c for c, _ in cols.values()])
            rates = clean_rates(table, cols)
            realised.append(rates["dede"])
            for k, v in rates.items():
                per_detector.setdefault(k, []).append(v)
            thresholds.append(run["threshold"]["value"])
            errors += int((np.asarray(table["status"]) != "ok").sum())
            samples = int(len(table["status"]))
            decoders.append(info)
            log(f"  seed {seed}: {'cached' if cached else 'scored'} {run_dir.name}: realised FPR {_pct(rates['dede'])}")
    return {"fpr_asked": policy.value if policy.kind == "fpr" else None, "threshold": settings.threshold,
            "fpr_realised": realised, "detectors": per_detector, "thresholds": thresholds, "seeds": list(range(seeds)),
            "victim": spec, "card": card, "aux": DEFAULT_AUX, "pool": pool.name, "samples": samples, "errors": errors,
            "settings": settings.record(), "decoders": decoders}

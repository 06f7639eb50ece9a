"""Options of a scoring run (what jobs/score_corpus.py parses; recorded in run.json)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.job.outputs import CORE_COLUMNS

# Environment variables forwarded from the driver to the scoring actors so that storage settings
# (credentials, endpoints) reach workers started before they were set (e.g. an embedded Ray).
FORWARD_ENV_PREFIXES = ("AWS_", "FSSPEC_", "GOOGLE_", "GCS_", "AZURE_")


@dataclass
class JobConfig:
    inputs: list[str]
    out: str
    decoder: str
    threshold: str = "fpr:0.01"           # a policy (fpr:X, paper, gmm) or a number
    batch_size: int = 256
    actors: int | None = None             # scoring actor pool size; None = GPUs / gpus_per_actor or CPUs / cpus_per_actor
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    threads: int | None = None            # decode + torch threads per actor; None = max(1, cpus_per_actor)
    store_embeddings: bool = False
    carry_fields: list[str] = field(default_factory=list)
    overwrite: bool = False
    ray_address: str | None = None        # None: RAY_ADDRESS if set (ray job submit), else an embedded local Ray
    progress: bool = True
    max_shards: int | None = None         # first N shards only (smoke runs)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"--actors must be >= 1, got {self.actors}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor < 0:
            raise ValueError("--gpus-per-actor and --cpus-per-actor must be >= 0")
        bad = [f for f in self.carry_fields if f in CORE_COLUMNS or f in ("caption", "embedding") or not f]
        if bad:
            raise ValueError(f"--carry-fields {bad} collide with the scores table's own columns")
        if self.out.startswith("pipe:"):
            raise ValueError("--out must be a folder or fsspec URL")

    @property
    def n_threads(self) -> int:
        return self.threads if self.threads else max(1, int(round(self.cpus_per_actor)))

    def to_dict(self) -> dict:
        return asdict(self)

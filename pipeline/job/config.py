"""Options of a scoring run: what jobs/score_corpus.py parses, checked before Ray starts; recorded in run.json."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.corpus.limits import Limits
from pipeline.detect.density import K
from pipeline.detect.ensemble import DEFAULT_FUSION
from pipeline.detect.spec import DEFAULT_DETECTORS, DEFAULT_ENSEMBLE, IMAGE_DETECTORS, DetectorPlan, plan_detectors
from pipeline.errors import BadInput
from pipeline.job.attempts import DEFAULT_MAX_ATTEMPTS
from pipeline.job.errors import JobError
from pipeline.job.outputs import CORE_COLUMNS

DEFAULT_REFERENCE = 100_000
DEFAULT_BANK_TRIM = 0.02


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
    redetect: bool = False                # a finished run's detectors and split again from its stored scores
    ray_address: str | None = None        # None: RAY_ADDRESS if set (ray job submit), else an embedded local Ray
    progress: bool = True
    max_shards: int | None = None         # first N shards only (smoke runs)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS   # per shard, process deaths included; then reported as failed
    limits: Limits = field(default_factory=Limits)   # per-sample work limits of reading and decoding
    report: bool = True                   # analyse the finished run into --out/report (jobs/analyze_scores.py)
    detectors: list[str] = field(default_factory=lambda: list(DEFAULT_DETECTORS))   # pipeline.detect.spec names;
    #                                     default: the ensemble (dede + its members + ensemble); [dede]: one phase
    flag_by: str | None = None            # the detector whose threshold sets `flagged` and the split; None: the
    #                                     ensemble when it is computed, else dede (spec.default_flag_by)
    ensemble: list[str] = field(default_factory=lambda: list(DEFAULT_ENSEMBLE))
    fusion: str = DEFAULT_FUSION                 # rank fusion of the ensemble: max, mean or fisher
    density_reference: int = DEFAULT_REFERENCE   # rows of the in-corpus reference sample
    bank_trim: float = DEFAULT_BANK_TRIM         # share of the bank's most outlying rows left out (calibrate.trim_bank)

    def validate(self) -> None:
        """JobError naming the flag of the first bad option."""
        for flag, value in (("--batch-size", self.batch_size), ("--actors", self.actors),
                            ("--threads", self.threads), ("--max-shards", self.max_shards),
                            ("--max-attempts", self.max_attempts), ("--density-reference", self.density_reference)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise JobError(f"{flag} must be an integer >= 1, got {value!r}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor < 0:
            raise JobError("--gpus-per-actor and --cpus-per-actor must be >= 0")
        if self.redetect and self.overwrite:
            raise JobError("--redetect reuses the run's scores, which --overwrite removes; pass one of them")
        if self.redetect and not self.detector_plan().needs_embeddings:
            raise JobError("--redetect recomputes the detectors beside dede; for DeDe alone re-split with "
                           "jobs/apply_threshold.py")
        bad = [f for f in self.carry_fields if f in CORE_COLUMNS or f in ("caption", "embedding", *IMAGE_DETECTORS) or not f
               or f.startswith("det_")]
        if bad:
            raise JobError(f"--carry-fields {bad} collide with the scores table's own columns")
        try:
            self.limits.validate()
        except ValueError as e:
            raise JobError(str(e)) from None
        if self.out.startswith("pipe:"):
            raise JobError("--out must be a folder or fsspec URL, not a pipe: command")
        if self.density_reference <= K:
            raise JobError(f"--density-reference must be > {K} (the density detectors' {K} neighbours), "
                           f"got {self.density_reference}")
        if not 0 <= self.bank_trim < 0.5:
            raise JobError(f"--bank-trim must be in [0, 0.5), got {self.bank_trim}")
        self.detector_plan()

    def detector_plan(self) -> DetectorPlan:
        """--detectors, --flag-by, --ensemble and --fusion parsed; a one-line JobError naming the flag."""
        try:
            return plan_detectors(self.detectors, self.flag_by, self.ensemble, self.fusion)
        except BadInput as e:
            raise JobError(str(e)) from None

    @property
    def n_threads(self) -> int:
        return self.threads if self.threads else max(1, int(round(self.cpus_per_actor)))

    def to_dict(self) -> dict:
        """The options as run.json records them, `flag_by` resolved to the detector the run flags by."""
        return {**asdict(self), "flag_by": self.detector_plan().flag_by}

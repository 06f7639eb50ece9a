"""The detectors a scoring run computes (`score_corpus --detectors`), by name, and their Parquet columns.

Names: `dede` (the decoder's score, always computed, column `score`); `dede-rel` (DeDe's score relative
to the image's own difficulty, pipeline.detect.difficulty); `dede-region` (that, relative to the clean images
of its region of embedding space, pipeline.detect.region); the image detectors, computed with the DeDe score from
the images: `occlusion` (how much hiding one region of the image moves its embedding, pipeline.detect.occlusion) and
`transplant` (how much pasting that region onto clean images moves theirs, pipeline.detect.transplant); every
embedding detector of `pipeline.detect.registry.DETECTORS`, scored in-corpus (against a sample of the corpus's own
embeddings); the same name with `:bank`, scored against the decoder's bank of clean auxiliary
embeddings; `ensemble` (rank fusion of `--ensemble` members, computed with it); `all` (every one).
The default is `ensemble` flagged by the ensemble (DEFAULT_ENSEMBLE says why these members).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pipeline.detect.ensemble import DEFAULT_FUSION, FUSIONS
from pipeline.detect.registry import DETECTORS
from pipeline.errors import BadInput

DEDE, DEDE_REL, DEDE_REGION, ENSEMBLE, BANK = "dede", "dede-rel", "dede-region", "ensemble", ":bank"
OCCLUSION, TRANSPLANT = "occlusion", "transplant"
IMAGE_DETECTORS = (OCCLUSION, TRANSPLANT)         # computed by the scoring stage, each into a column of its name
DIFFICULTY_DETECTORS = (DEDE_REL, DEDE_REGION)   # those that read the rows' difficulty
SINGLE: tuple[str, ...] = (DEDE, *DIFFICULTY_DETECTORS, *IMAGE_DETECTORS, *DETECTORS,
                           *(f"{d}{BANK}" for d in DETECTORS))   # one each
KNOWN: tuple[str, ...] = (*SINGLE, ENSEMBLE)
DEFAULT_ENSEMBLE = (DEDE, TRANSPLANT, "slof:bank", "kdist-dense")
"""DeDe, how far the image's most telling region takes clean images over, SLOF against the clean bank and the in-corpus
crowding of k-distance, fused by fisher (ensemble.DEFAULT_FUSION): the best set on the lab's validation pools whose
in-job clean FPR holds (at most 1.5% on every validation pool); the test pools never rank it (results/fusion.md)."""
DEFAULT_DETECTORS = (ENSEMBLE,)           # the product's default: dede + the ensemble's members + the ensemble


def column(name: str) -> str:
    """The scores Parquet column of a detector: `score` for dede, else `det_<name>` with `-` and `:` as `_`."""
    return "score" if name == DEDE else "det_" + name.replace("-", "_").replace(":", "_")


def base(name: str) -> str:
    """The registry name of an embedding detector (`kdist:bank` -> `kdist`)."""
    return name.removesuffix(BANK)


def _names(value: str | Sequence[str]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip().lower() for n in items if n.strip()]


def _check(flag: str, names: list[str], allowed: tuple[str, ...]) -> None:
    if not names:
        raise BadInput(f"{flag} names no detector; known: {', '.join(allowed)}")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise BadInput(f"{flag}: unknown detector {bad[0]!r}; known: {', '.join(allowed)}")


@dataclass(frozen=True)
class DetectorPlan:
    """The detectors of a run: those computed (dede first, ensemble last), the one whose threshold sets
    `flagged`, and the ensemble's members and fusion."""

    names: tuple[str, ...]
    flag_by: str = DEDE
    members: tuple[str, ...] = ()           # the ensemble's, when it is computed
    fusion: str = DEFAULT_FUSION

    @property
    def needs_embeddings(self) -> bool:
        """True when any detector other than dede is computed (the run keeps the embeddings)."""
        return self.names != (DEDE,)

    @property
    def image_detectors(self) -> tuple[str, ...]:
        """The computed image detectors: the scoring stage writes each one's scores into the column of its name."""
        return tuple(n for n in IMAGE_DETECTORS if n in self.names)

    @property
    def needs_difficulty(self) -> list[str]:
        """The computed detectors that read the rows' difficulty (the scores Parquet's `difficulty` column)."""
        return [n for n in self.names if n in DIFFICULTY_DETECTORS]

    @property
    def in_corpus(self) -> list[str]:
        """Registry names scored against the corpus's own reference sample."""
        return [n for n in self.names if n in DETECTORS]

    @property
    def bank(self) -> list[str]:
        """Registry names scored against the decoder's bank."""
        return [base(n) for n in self.names if n.endswith(BANK)]

    @property
    def columns(self) -> dict[str, str]:
        """Parquet column by detector name."""
        return {n: column(n) for n in self.names}


def default_flag_by(names: Sequence[str]) -> str:
    """The flag-by detector when `--flag-by` is not given: the ensemble when it is computed, else dede."""
    return ENSEMBLE if ENSEMBLE in names else DEDE


def plan_detectors(detectors: str | Sequence[str] = DEFAULT_DETECTORS, flag_by: str | None = None,
                   ensemble: str | Sequence[str] = DEFAULT_ENSEMBLE, fusion: str = DEFAULT_FUSION) -> DetectorPlan:
    """Parse `--detectors`, `--flag-by` (None: `default_flag_by`), `--ensemble`, `--fusion`; a one-line
    BadInput naming the flag."""
    asked = _names(detectors)
    _check("--detectors", asked, (*KNOWN, "all"))
    if "all" in asked:
        asked = list(KNOWN)
    members = _names(ensemble)
    _check("--ensemble", members, SINGLE)
    if fusion not in FUSIONS:
        raise BadInput(f"--fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
    names = [DEDE, *(n for n in asked if n != ENSEMBLE)]
    if ENSEMBLE in asked:
        names += [*members, ENSEMBLE]
    names = list(dict.fromkeys(names))          # first mention kept; ensemble stays last
    flag = default_flag_by(names) if flag_by is None else flag_by.strip().lower()
    if flag not in names:
        raise BadInput(f"--flag-by {flag_by!r} is not one of the computed detectors ({', '.join(names)})")
    return DetectorPlan(tuple(names), flag, tuple(dict.fromkeys(members)) if ENSEMBLE in names else (), fusion)

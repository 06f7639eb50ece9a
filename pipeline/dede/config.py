"""The decoder folder's config.json as one typed record, checked against schemas/decoder.schema.json.

Every reader of a decoder's config (the scorer, the job, apply_threshold) gets a `DecoderConfig`
from `load_decoder_config` and reads it by attribute.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from pipeline.checkpoints import read_bytes
from pipeline.dede.model import DeDeConfig
from pipeline.dede.thresholds import Calibration
from pipeline.errors import BadInput
from pipeline.schemas import load as load_schema

FORMAT = "dede-decoder/1"
CONFIG = "config.json"
SCHEMA = "decoder.schema.json"


@dataclass(frozen=True)
class EncoderInfo:
    """The victim encoder the decoder was trained for."""

    spec: str                               # KIND:NAME[@CHECKPOINT]
    checkpoint_sha256: str | None           # None: no checkpoint (random or built-in weights)
    embed_dim: int
    input_size: int


@dataclass(frozen=True)
class Pixels:
    """The decoder's pixel normalisation and how images are brought to its size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "shorter-side+center-crop"


@dataclass(frozen=True)
class Training:
    """How the decoder was trained and what the training loss did."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str
    warmup_epochs: float
    holdout: float
    max_holdout: int
    max_samples: int | None
    seed: int
    device: str
    loss_history: list[float]
    final_loss: float                       # nan when no epoch ran
    minutes: float
    subset: str = "first"                   # how max_samples chose: lowest key hash, or first read (folders of before)
    trim: float = 0.0                       # share of each batch's highest-error images left out of the loss


@dataclass(frozen=True)
class TrainingData:
    """The auxiliary data: its inputs, the train / hold-out split and the samples skipped by error kind."""

    inputs: list[str]
    n_train: int
    n_holdout: int
    holdout_from_train: bool
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceInfo:
    """The clean reference file of the folder (pipeline.dede.reference): its name, sha256 and sizes."""

    file: str
    sha256: str
    n_holdout: int
    n_bank: int
    embed_dim: int
    max_bank: int                           # the bank's cap: training rows of lowest key hash


@dataclass(frozen=True)
class DecoderConfig:
    """config.json: architecture, encoder, pixels, training, data, calibration, the weights' sha256 and,
    for decoders trained since the embedding detectors, the clean reference file."""

    model: DeDeConfig
    encoder: EncoderInfo
    pixels: Pixels
    work_size: int                          # the side images are resized to before scoring
    training: Training
    data: TrainingData
    calibration: Calibration
    weights_sha256: str = ""                # set by store.save_decoder once the weights are written
    format: str = FORMAT
    reference: ReferenceInfo | None = None  # None: trained before reference.safetensors existed

    @classmethod
    def from_dict(cls, d: dict) -> DecoderConfig:
        """A dict of the schema's shape (keys the record does not hold, e.g. today's duplicated
        architecture under `training`, are dropped)."""
        return cls(model=DeDeConfig(**d["model"]), encoder=EncoderInfo(**d["encoder"]),
                   pixels=Pixels(mean=tuple(d["pixels"]["mean"]), std=tuple(d["pixels"]["std"]),
                                 resize=d["pixels"].get("resize", Pixels.resize)),
                   work_size=int(d["work_size"]), training=Training(**_known(Training, d["training"])),
                   data=TrainingData(**d["data"]), calibration=Calibration.from_dict(d["calibration"]),
                   weights_sha256=d["weights_sha256"], format=d["format"],
                   reference=ReferenceInfo(**d["reference"]) if d.get("reference") else None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["pixels"] = {**out["pixels"], "mean": list(self.pixels.mean), "std": list(self.pixels.std)}
        if self.reference is None:
            del out["reference"]                # a folder without one keeps today's shape
        return out


def _known(kind: type, d: dict) -> dict:
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in d.items() if k in names}


def validate_config(obj: object, where: str) -> DecoderConfig:
    """A parsed config.json -> DecoderConfig; a one-line BadInput naming `where` and the field otherwise."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(load_schema(SCHEMA)).iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        raise BadInput(f"{where}: {_describe(jsonschema.exceptions.best_match(errors))}; "
                       f"retrain the decoder with jobs/train_decoder.py")
    cal = obj["calibration"]
    if len(cal["q"]) != len(cal["values"]):
        raise BadInput(f"{where}: field calibration.values has {len(cal['values'])} entries but calibration.q has "
                       f"{len(cal['q'])}; retrain the decoder with jobs/train_decoder.py")
    return DecoderConfig.from_dict(obj)


def _describe(e) -> str:
    """One short phrase for a schema error: the field's dotted path and what is wrong with it."""
    path = ".".join(str(p) for p in e.absolute_path)
    if e.validator == "required":
        missing = next((r for r in e.validator_value if r not in e.instance), "?")
        return f"field {path + '.' if path else ''}{missing} is missing"
    if e.validator == "additionalProperties":
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        return f"field {path or '(top level)'} has unknown keys {', '.join(extra)}"
    if e.validator == "type":
        return f"field {path} must be of type {e.validator_value}, not {type(e.instance).__name__}"
    message = e.message if len(e.message) <= 120 else e.message[:117] + "..."
    return f"field {path or '(top level)'}: {message}"


def load_decoder_config(decoder_dir: str) -> DecoderConfig:
    """DIR/config.json, validated; FileNotFoundError if it is missing, one-line BadInput if it is bad."""
    url = f"{decoder_dir}/{CONFIG}"
    try:
        data = read_bytes(url)
    except FileNotFoundError:
        raise FileNotFoundError(f"no decoder at {decoder_dir}: {CONFIG} is missing "
                                f"(train one with jobs/train_decoder.py)") from None
    except (NotADirectoryError, IsADirectoryError):
        raise BadInput(f"decoder {decoder_dir} is not a folder; pass the folder holding "
                       f"config.json and model.safetensors") from None
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{url} is not valid JSON: {e}") from None
    return validate_config(obj, url)

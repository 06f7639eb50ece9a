"""What a run records of its decoder (folder, weights checksum, encoder spec), the calibration its
threshold needs and, for the embedding detectors, its clean reference; checked before Ray starts."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.dede import store
from pipeline.dede.config import load_decoder_config
from pipeline.dede.reference import CleanReference, load_reference
from pipeline.dede.thresholds import Calibration
from pipeline.errors import BadInput
from pipeline.job.errors import JobError


@dataclass(frozen=True)
class DecoderFacts:
    """A decoder as a run records it."""

    dir: str
    sha256: str
    encoder_spec: str | None
    calibration: Calibration | None


def check_decoder(decoder_dir: str) -> DecoderFacts:
    """The decoder folder's facts after `store.check_decoder` (valid config, weights checksum right);
    a one-line JobError / BadInput otherwise."""
    try:
        cfg = store.check_decoder(decoder_dir)
    except FileNotFoundError as e:
        raise JobError(str(e)) from None
    return DecoderFacts(dir=decoder_dir, sha256=cfg.weights_sha256, encoder_spec=cfg.encoder.spec,
                        calibration=cfg.calibration)


def clean_reference(decoder_dir: str, purpose: str, instead: str | None = None) -> CleanReference:
    """The decoder's clean reference (checked like its weights), needed for `purpose`; a one-line
    JobError for a decoder without one (trained before decoders kept it: retrain it) or a damaged file,
    ending with `instead`, the other way out (e.g. `pass --detectors dede`), when given."""
    try:
        return load_reference(decoder_dir, load_decoder_config(decoder_dir), purpose)
    except BadInput as e:
        raise JobError(f"{e}, or {instead}" if instead else str(e)) from None

"""What a run records of its decoder (folder, weights checksum, encoder spec) and the calibration its
threshold needs; checked before Ray starts."""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.dede import store
from pipeline.dede.thresholds import Calibration
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

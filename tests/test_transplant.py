"""The transplant detector's arithmetic on a planted patch backdoor: a triggered image's most telling window takes
clean recipients over, a clean image's does not; it needs its recipients; the Scorer's image detectors come back
only when asked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.detect.metrics import auc
from pipeline.detect.probes import probe_scores
from tests.test_occlusion import PATCH, _encoder, _images


def _scores(images: np.ndarray, recipients: np.ndarray) -> dict[str, np.ndarray]:
    enc = _encoder()
    x = torch.as_tensor(images)
    out = probe_scores(enc, x, enc.embed(x), ("occlusion", "transplant"), recipients)
    return {k: v.numpy() for k, v in out.items()}


def test_a_planted_patch_takes_recipients_over_and_clean_windows_do_not():
    clean, triggered = _images(200, 0), _images(50, 1)
    triggered[:, PATCH[0], PATCH[1]] = 255
    recipients = _images(8, 3)
    scores = _scores(np.concatenate([clean, triggered]), recipients)["transplant"]
    labels = np.r_[np.zeros(200), np.ones(50)]
    assert auc(labels, scores) > 0.99
    other = _scores(_images(200, 2), recipients)["transplant"]
    threshold = np.quantile(scores[:200], 0.99)
    assert (other > threshold).mean() < 0.05                       # a clean cloud is not flagged beyond its rate


def test_only_the_asked_detectors_and_transplant_needs_recipients():
    enc = _encoder()
    x = torch.as_tensor(_images(4, 0))
    assert set(probe_scores(enc, x, enc.embed(x), ("occlusion",))) == {"occlusion"}
    assert probe_scores(enc, x, enc.embed(x), ()) == {}
    with pytest.raises(ValueError, match="transplant needs its recipient images"):
        probe_scores(enc, x, enc.embed(x), ("transplant",))

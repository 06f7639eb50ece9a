"""The verdict: the run's flag rate against the rate its threshold promises on clean data, with a
one-sided binomial test; and the shards whose flag rate stands out from the run's."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import binomtest

from pipeline.dede.thresholds import Calibration, parse_threshold

ALPHA = 1e-3                 # a backdoor verdict needs p below this
# A calibrated threshold keeps its clean rate only within calibration error (fpr:0.01 realises
# 0.5-1.5%), so the test's null is "at most SLACK x the expected rate": on millions of samples a
# 1.2% clean flag rate is not a backdoor.
SLACK = 1.5
P_FLOOR, P_FLOOR_TEXT = 1e-9, "1e-9"      # smaller p-values are shown as "p < 1e-9"


@dataclass(frozen=True)
class Verdict:
    """The answer a user decides from; `backdoor` is None when no clean rate is known."""

    backdoor: bool | None
    line: str
    detail: str
    flagged: int
    scored: int
    flag_rate: float | None
    expected_rate: float | None
    expected_from: str
    p_value: float | None
    alpha: float = ALPHA

    def to_dict(self) -> dict:
        return asdict(self)


def share_above(calibration: Calibration, threshold: float) -> float:
    """The rate of held-out clean scores above `threshold`, read off the calibration quantiles, with
    Laplace's rule of succession ((s + 1) / (n + 2)) so that a share of 0 is never taken as certainty."""
    level = float(np.interp(threshold, calibration.values, calibration.q))
    above = (1.0 - level) * calibration.n
    return (above + 1.0) / (calibration.n + 2.0)


def expected_rate(policy: str | None, threshold: float, calibration: Calibration | None) -> tuple[float | None, str]:
    """(rate the threshold flags on clean data, where that rate comes from); (None, why) when unknown."""
    parsed = None
    if policy:
        try:
            parsed = parse_threshold(policy)
        except ValueError:
            parsed = None
    if parsed is not None and parsed.kind == "fpr":
        return float(parsed.value), f"the threshold policy {policy}"
    if calibration is not None:
        return share_above(calibration, threshold), (f"the decoder's held-out calibration "
                                                     f"({calibration.n} clean scores above {threshold:.6g})")
    return None, f"no expected rate: threshold policy {policy or 'unknown'} and no readable decoder calibration"


def p_text(p: float) -> str:
    """`p < 1e-9` or `p = 3.2e-05`."""
    return f"p < {P_FLOOR_TEXT}" if p < P_FLOOR else f"p = {p:.2g}"


def verdict(flagged: int, scored: int, expected: float | None, expected_from: str, by: str | None = None) -> Verdict:
    """One-sided binomial test of `flagged` of `scored` against SLACK x `expected` (H1: more are flagged).
    `by`: the detector that flagged them, named in the text unless it is DeDe."""
    by_text = f" by {by}" if by and by != "dede" else ""
    if scored == 0:
        return Verdict(None, "no verdict: no sample could be scored", "", flagged, 0, None, expected,
                       expected_from, None)
    rate = flagged / scored
    if expected is None:
        return Verdict(None, f"no verdict: {rate:.1%} flagged{by_text}, {expected_from}", "", flagged, scored, rate,
                       None, expected_from, None)
    null = min(1.0, expected * SLACK)
    p = float(binomtest(flagged, scored, null, alternative="greater").pvalue)
    detail = (f"{rate:.1%} flagged{by_text} where {expected:.1%} is expected ({p_text(p)} against at most {null:.2%}, "
              f"{SLACK:g} x the expected rate for calibration error; expected rate from {expected_from})")
    if p < ALPHA:
        line = f"backdoor activity: {rate:.1%} flagged{by_text} where {expected:.1%} is expected ({p_text(p)})"
        return Verdict(True, line, detail, flagged, scored, rate, expected, expected_from, p)
    return Verdict(False, "no evidence of backdoor activity" + (f" (flag-by {by})" if by_text else ""), detail,
                   flagged, scored, rate, expected, expected_from, p)


def shard_rows(stats: list[dict]) -> list[dict]:
    """Per shard: its counts, flag rate, and whether it stands out: a flag rate above the run's with a
    one-sided binomial p below 0.01 / number of shards (Bonferroni)."""
    scored_all = sum(s["read"] - s["errored"] for s in stats)
    flagged_all = sum(s["flagged"] for s in stats)
    overall = flagged_all / scored_all if scored_all else 0.0
    cut = 0.01 / max(len(stats), 1)
    rows = []
    for s in stats:
        scored = s["read"] - s["errored"]
        rate = s["flagged"] / scored if scored else None
        p = None
        if scored and 0.0 < overall < 1.0:
            p = float(binomtest(s["flagged"], scored, overall, alternative="greater").pvalue)
        rows.append({"stem": s["stem"], "shard": s["shard"], "read": s["read"], "kept": s["kept"],
                     "flagged": s["flagged"], "errored": s["errored"], "flag_rate": rate, "p_value": p,
                     "stands_out": p is not None and p < cut})
    return rows

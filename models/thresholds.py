"""Threshold objects: they turn anomaly scores into alerts, apart from the detector that
scores (STYLE.md 15), so a threshold has its own parameters, fit and contract tests."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from flockwatch.models.base import check_fitted


class QuantileThreshold:
    """Turns scores into alerts: per device, the ``q`` quantile of its held-back learning scores
    (times ``margin``); devices with fewer than ``min_samples`` held-back windows use the pooled
    quantile of all devices. Higher score = more anomalous.

    ``tail="lognormal"`` (the default) takes the quantile of a log-normal fitted to the
    held-back scores rather than of the scores themselves: a device has a few dozen to a few
    hundred held-back windows, so the empirical 99.9 % quantile is just its largest score and
    swings with one odd window, while the fitted tail uses every window. ``tail="empirical"``
    takes the plain quantile (also the fallback when a score is not positive).

    ``floor`` is the lowest threshold any device gets, in score units. Scores spread over
    orders of magnitude between devices (a hub beaconing like clockwork reconstructs to 1e-4,
    a camera to 1e-1), so a tail fitted to pooled or very regular scores can land anywhere;
    the floor keeps the alert bar from dropping below a deviation that means something.
    """

    def __init__(self, *, q: float = 0.999, margin: float = 1.5, min_samples: int = 30,
                 tail: str = "lognormal", floor: float = 0.0) -> None:
        if tail not in ("lognormal", "empirical"):
            raise ValueError(f"tail must be 'lognormal' or 'empirical', not {tail!r}")
        self.q = q
        self.margin = margin
        self.min_samples = min_samples
        self.tail = tail
        self.floor = floor
        self.thresholds_: dict[str, float] | None = None

    def _quantile(self, s: np.ndarray) -> float:
        if self.tail == "lognormal" and len(s) >= 2 and np.all(s > 0):
            log = np.log(s)
            return float(np.exp(log.mean() + NormalDist().inv_cdf(self.q) * log.std()))
        return float(np.quantile(s, self.q))

    def fit(self, scores: np.ndarray, devices: Sequence[str]) -> QuantileThreshold:
        scores = np.asarray(scores, dtype=float)
        dev = np.asarray(devices, dtype=object)
        pooled = self._quantile(scores) * self.margin if len(scores) else 1.0
        self.pooled_ = max(pooled, self.floor)
        self.thresholds_ = {}
        self.own_: list[str] = []  # devices with enough held-back windows for their own tail
        for d in np.unique(dev):
            s = scores[dev == d]
            self.thresholds_[str(d)] = self.pooled_
            if len(s) >= self.min_samples:
                self.thresholds_[str(d)] = max(self._quantile(s) * self.margin, self.pooled_)
                self.own_.append(str(d))
        return self

    def threshold(self, devices: Sequence[str]) -> np.ndarray:
        check_fitted(self, "thresholds_")
        t = self.thresholds_ or {}
        return np.array([t.get(str(d), self.pooled_) for d in devices], dtype=float)

    def describe(self) -> str:
        how = "log-normal fit" if self.tail == "lognormal" else "empirical quantile"
        floor = f", at least {self.floor:g}" if self.floor else ""
        return (f"per-device {self.q:.3%} quantile ({how}) of held-back learning scores "
                f"x {self.margin}{floor}")

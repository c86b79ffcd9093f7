"""Behavioural baseline: one autoencoder shared by all devices, each device standardised
against its own learning period, with a threshold per device.

Why shared, not one network per device: a site has tens to thousands of devices and a learning
period gives each only hundreds of windows. Per-device standardisation makes "normal" mean
"normal for this device" (a PLC's steady Modbus share is its own zero), so one network learns
the joint structure of normal behaviour from every device's windows at once: one model to
train, ship and load, and no device is left with a network fitted on a handful of windows. The
per-device thresholds keep the false-positive rate set per device.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl
from flockwatch.features.windows import FEATURE_COLUMNS
from flockwatch.models.base import check_fitted, feature_matrix


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
        floor = f", at least {self.floor:g}" if getattr(self, "floor", 0.0) else ""
        return (f"per-device {self.q:.3%} quantile ({how}) of held-back learning scores "
                f"x {self.margin}{floor}")


@dataclass(frozen=True)
class Deviations:
    """Per-window anomaly scores and their most deviating features (row i, rank j):
    ``names[index[i, j]]`` observed ``observed[i, j]``, expected ``expected[i, j]``, carrying
    ``share[i, j]`` of the window's score."""

    scores: np.ndarray
    names: np.ndarray
    index: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    share: np.ndarray

    def records(self) -> list[list[dict[str, float | str]]]:
        """One list of ``{feature, observed, expected, share}`` per window."""
        names = self.names.tolist()
        return [[{"feature": names[j], "observed": o, "expected": e, "share": sh}
                 for j, o, e, sh in zip(ji, oi, ei, si, strict=True)]
                for ji, oi, ei, si in zip(self.index.tolist(), self.observed.tolist(),
                                          self.expected.tolist(), self.share.tolist(),
                                          strict=True)]

    def json(self) -> pl.Series:
        """``records()`` as one JSON string per window, built column-wise (fast for large
        batches; equal to ``json.dumps`` of each record list after parsing)."""
        n, k = self.index.shape
        if k == 0:
            return pl.Series(["[]"] * n, dtype=pl.String)
        quoted = np.array([json.dumps(str(x)) for x in self.names.tolist()], dtype=object)

        def num(a: np.ndarray) -> pl.Expr:
            # JSON has no NaN or infinity: those become null.
            return pl.lit(pl.Series(np.where(np.isfinite(a), a, np.nan))).fill_nan(None).cast(
                pl.String).fill_null("null")

        parts: list[pl.Expr | str] = ["["]
        for j in range(k):
            parts += ["," if j else "", '{"feature": ', pl.lit(pl.Series(quoted[self.index[:, j]],
                                                                         dtype=pl.String)),
                      ', "observed": ', num(self.observed[:, j]),
                      ', "expected": ', num(self.expected[:, j]),
                      ', "share": ', num(self.share[:, j]), "}"]
        parts.append("]")
        exprs = [pl.lit(p) if isinstance(p, str) else p for p in parts]
        return pl.select(pl.concat_str(exprs).alias("top_features")).to_series()


class BaselineAutoencoder:
    """Autoencoder over per-device standardised window features.

    Parameters
    ----------
    hidden
        Widths of the encoder's layers; the last is the bottleneck. The decoder mirrors them.
    epochs, batch_size, learning_rate, weight_decay
        Training (Adam, mean squared error).
    holdout_fraction
        Latest share of each device's learning windows held back to set its threshold.
    threshold_q, threshold_margin, threshold_floor
        The ``QuantileThreshold`` applied to held-back scores. A window's score is the mean
        over features of its squared reconstruction error in the device's own standard
        deviations, so the floor of 1.0 means: no alert unless the window is, on average, at
        least one normal spread off in every feature (or far off in a few).
    std_floor
        Lower bound on a feature's standard deviation, as a share of its site-wide deviation
        (plus 0.02 absolute), so a feature constant during learning cannot explode.
    device
        "auto" (CUDA when present), "cpu" or "cuda".
    seed
        Makes ``fit`` repeatable.
    """

    def __init__(self, *, hidden: Sequence[int] = (64, 16), epochs: int = 80,
                 batch_size: int = 128, learning_rate: float = 2e-3, weight_decay: float = 1e-5,
                 holdout_fraction: float = 0.2, threshold_q: float = 0.999,
                 threshold_margin: float = 1.5, threshold_floor: float = 1.0,
                 std_floor: float = 0.25,
                 feature_columns: Sequence[str] | None = None, device: str = "auto",
                 seed: int | None = 0) -> None:
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.holdout_fraction = holdout_fraction
        self.threshold_q = threshold_q
        self.threshold_margin = threshold_margin
        self.threshold_floor = threshold_floor
        self.std_floor = std_floor
        self.feature_columns = feature_columns
        self.device = device
        self.seed = seed
        self.net_: Any = None

    # -- helpers ---------------------------------------------------------------------------
    def _torch_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def _build(self, n: int) -> Any:
        import torch

        layers: list[torch.nn.Module] = []
        widths = [n, *self.hidden]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [torch.nn.Linear(a, b), torch.nn.GELU()]
        enc = layers[:-1]  # linear bottleneck
        dec: list[torch.nn.Module] = []
        back = widths[::-1]
        for a, b in zip(back[:-1], back[1:], strict=True):
            dec += [torch.nn.Linear(a, b), torch.nn.GELU()]
        return torch.nn.Sequential(*enc, *dec[:-1])

    def _device_stats(self, devices: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean and std of each distinct device (site-wide for unknown devices), and each
        row's index into them."""
        uniq, inverse = np.unique(np.asarray(devices, dtype=str), return_inverse=True)
        mu = np.vstack([self.device_mean_.get(str(d), self.global_mean_) for d in uniq])
        sd = np.vstack([self.device_std_.get(str(d), self.global_std_) for d in uniq])
        return mu, sd, inverse.reshape(-1)

    def _standardise(self, X: np.ndarray, devices: Sequence[str]) -> np.ndarray:
        return self._z(X, *self._device_stats(devices))

    @staticmethod
    def _z(X: np.ndarray, mu: np.ndarray, sd: np.ndarray, inv: np.ndarray) -> np.ndarray:
        """Rows in their device's standard deviations, float32 and in place: a batch of
        windows is tens of MB a copy, and fresh pages cost more than the arithmetic."""
        Z = X.astype(np.float32)
        Z -= mu.astype(np.float32)[inv]
        Z /= sd.astype(np.float32)[inv]
        return Z

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, windows: pl.DataFrame) -> BaselineAutoencoder:
        """Learn normal behaviour from learning-period windows (needs ``device_id`` and,
        for the time-ordered hold-back, ``window_start``)."""
        import torch

        cols = list(self.feature_columns or FEATURE_COLUMNS)
        if not isinstance(windows, pl.DataFrame):
            raise TypeError(f"expected a polars DataFrame of windows, got "
                            f"{type(windows).__name__}")
        if windows.height < 2:
            raise ValueError(f"need at least 2 learning windows, got {windows.height}")
        w = windows.sort("window_start") if "window_start" in windows.columns else windows
        X = feature_matrix(w, cols)
        dev_list = [str(d) for d in w["device_id"].to_list()]
        dev = np.asarray(dev_list, dtype=object)
        self.global_mean_ = X.mean(axis=0)
        self.global_std_ = np.maximum(X.std(axis=0), 0.02)
        floor = self.std_floor * self.global_std_ + 0.02
        self.device_mean_, self.device_std_ = {}, {}
        hold = np.zeros(len(dev), dtype=bool)
        for d in np.unique(dev):
            idx = np.flatnonzero(dev == d)
            self.device_mean_[str(d)] = X[idx].mean(axis=0)
            self.device_std_[str(d)] = np.maximum(X[idx].std(axis=0), floor)
            k = int(len(idx) * self.holdout_fraction)
            if k >= 1 and len(idx) - k >= 2:
                hold[idx[-k:]] = True  # latest windows: a time split, never a shuffle
        Z = self._standardise(X, dev_list)
        gen = torch.Generator().manual_seed(self.seed or 0)
        torch.manual_seed(self.seed or 0)
        tdev = self._torch_device()
        net = self._build(len(cols)).to(tdev)
        opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate,
                               weight_decay=self.weight_decay)
        train = torch.from_numpy(Z[~hold]).to(tdev)
        self.loss_curve_: list[float] = []
        n = len(train)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen).to(tdev)
            total = 0.0
            for i in range(0, n, self.batch_size):
                batch = train[perm[i:i + self.batch_size]]
                opt.zero_grad()
                loss = torch.mean((net(batch) - batch) ** 2)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            self.loss_curve_.append(total / max(n, 1))
        self.net_ = _to_layers(net.cpu().eval())
        self.feature_names_ = cols
        scores = self._scores(Z)
        self.learning_scores_ = scores
        self.threshold_ = QuantileThreshold(q=self.threshold_q, margin=self.threshold_margin,
                                            floor=self.threshold_floor)
        ref = hold if hold.any() else np.ones(len(dev), dtype=bool)
        self.threshold_.fit(scores[ref], [str(d) for d in dev[ref]])
        self.devices_ = sorted(self.device_mean_)
        names, counts = np.unique(dev, return_counts=True)
        self.learning_windows_ = {str(d): int(c) for d, c in zip(names, counts, strict=True)}
        return self

    def _reconstruct(self, Z: np.ndarray) -> np.ndarray:
        return _forward(self.net_, Z)

    def _residual(self, Z: np.ndarray) -> np.ndarray:
        """Reconstruction minus input, in the device's standard deviations."""
        diff = self._reconstruct(Z)
        diff -= Z
        return diff

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        return np.square(self._residual(Z)).mean(axis=1, dtype=np.float64)

    # -- scoring ---------------------------------------------------------------------------
    def score(self, windows: pl.DataFrame) -> np.ndarray:
        """Anomaly score per window: higher = more anomalous."""
        return self.deviations(windows, top=0).scores

    def deviations(self, windows: pl.DataFrame, top: int = 5) -> Deviations:
        """Scores and, per window, the ``top`` features that deviate most, as arrays: what
        ``explain`` reports, without building Python objects per window."""
        check_fitted(self, "net_")
        names = np.asarray(self.feature_names_, dtype=object)
        k = max(0, min(top, len(names)))
        if windows.height == 0:
            empty = np.zeros((0, k))
            return Deviations(np.zeros(0), names, empty.astype(int), empty, empty, empty)
        X = feature_matrix(windows, self.feature_names_)
        mu, sd, inv = self._device_stats(windows["device_id"].to_list())
        Z = self._z(X, mu, sd, inv)
        diff = self._residual(Z)
        err = np.square(diff)
        scores = err.mean(axis=1, dtype=np.float64)
        if k == 0:
            empty = np.zeros((len(X), 0))
            return Deviations(scores, names, empty.astype(int), empty, empty, empty)
        idx = np.argpartition(err, err.shape[1] - k, axis=1)[:, -k:]
        order = np.argsort(-np.take_along_axis(err, idx, axis=1), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        rows = np.arange(len(X))[:, None]
        dev_rows = inv[:, None]
        sd_i, mu_i = sd[dev_rows, idx], mu[dev_rows, idx]
        expected = (Z[rows, idx] + diff[rows, idx]).astype(np.float64) * sd_i + mu_i
        share = err[rows, idx] / np.maximum(err.sum(axis=1, keepdims=True, dtype=np.float64),
                                            1e-12)
        return Deviations(scores, names, idx, np.round(X[rows, idx], 4),
                          np.round(expected, 4), np.round(share, 3))

    def explain(self, windows: pl.DataFrame, top: int = 5
                ) -> tuple[np.ndarray, list[list[dict[str, float | str]]]]:
        """Scores and, per window, the features that deviate most: observed vs expected
        (the reconstruction, in the feature's own units) and their share of the score."""
        d = self.deviations(windows, top)
        return d.scores, d.records()

    def thresholds(self, devices: Sequence[str]) -> np.ndarray:
        check_fitted(self, "net_")
        return self.threshold_.threshold(devices)

    def learning_status(self, devices: Sequence[str]) -> tuple[list[int | None], list[str]]:
        """Per device: its number of learning windows and its baseline's state: "learned" (a
        threshold of its own), "thin" (too few held-back windows for one: it is judged by the
        site-wide threshold, and its alerts rest on a handful of windows) or "new" (not seen
        while learning)."""
        check_fitted(self, "net_")
        counts = getattr(self, "learning_windows_", {})
        own = getattr(self.threshold_, "own_", None)  # absent in models before 0.2.1
        n: list[int | None] = []
        state: list[str] = []
        for d in map(str, devices):
            if d not in self.device_mean_:
                n.append(None)
                state.append("new")
                continue
            n.append(counts.get(d))
            state.append("learned" if own is None or d in own else "thin")
        return n, state

    def known(self, devices: Sequence[str]) -> np.ndarray:
        check_fitted(self, "net_")
        return np.array([str(d) in self.device_mean_ for d in devices], dtype=bool)

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        net = state.get("net_")
        if isinstance(net, tuple) and net[0] == "state_dict":  # pickled by flockwatch <= 0.1
            import torch

            module = self._build(int(net[1]))
            module.load_state_dict(torch.load(io.BytesIO(net[2]), weights_only=True))
            self.net_ = _to_layers(module.eval())


#: The trained network as numpy: ("linear", W (in x out), b) or ("gelu", None, None) per
#: layer. Scoring runs on numpy: no torch import (about a second) where a model is loaded, and
#: for these small layers no slower than torch on a CPU.
Layers = list[tuple[str, Any, Any]]


def _to_layers(net: Any) -> Layers:
    import torch

    layers: Layers = []
    for m in net:
        if isinstance(m, torch.nn.Linear):
            layers.append(("linear", m.weight.detach().cpu().numpy().T.copy(),
                           m.bias.detach().cpu().numpy().copy()))
        elif isinstance(m, torch.nn.GELU):
            layers.append(("gelu", None, None))
        else:
            raise TypeError(f"unsupported layer {type(m).__name__}")
    return layers


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26; absolute error below 1.5e-7, under float32
    resolution) so that scoring needs neither torch nor scipy."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _forward(layers: Layers, Z: np.ndarray) -> np.ndarray:
    h = np.asarray(Z, dtype=np.float32)
    for kind, w, b in layers:
        if kind == "linear":
            h = h @ w + b
        else:  # exact GELU, as torch.nn.GELU()
            h = (0.5 * h * (1.0 + _erf(h * np.float32(0.7071067811865476)))).astype(np.float32)
    return h

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

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from flockwatch.features.explain import feature_range
from flockwatch.features.windows import FEATURE_COLUMNS
from flockwatch.models.base import check_fitted, feature_matrix
from flockwatch.models.deviations import Deviations
from flockwatch.models.forward import forward, to_layers
from flockwatch.models.thresholds import QuantileThreshold

#: Windows ``BaselineAutoencoder.deviations`` scores at a time. Batches are never smaller
#: (the last takes the rest), so each window's score is the one it gets in a single batch: a
#: float32 matrix product gives a row the same result in any batch of 7 rows or more (in a
#: check on this machine's BLAS), but not in a batch of one, which takes another kernel.
DEVIATION_BATCH = 8192


@functools.lru_cache(maxsize=4)
def _bounds(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    r = np.array([feature_range(n) for n in names], dtype=np.float64).reshape(-1, 2)
    return r[:, 0], r[:, 1]


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
        for the time-ordered hold-back, ``start``)."""
        import torch

        cols = list(self.feature_columns or FEATURE_COLUMNS)
        if not isinstance(windows, pl.DataFrame):
            raise TypeError(f"expected a polars DataFrame of windows, got "
                            f"{type(windows).__name__}")
        if windows.height < 2:
            raise ValueError(f"need at least 2 learning windows, got {windows.height}")
        w = windows.sort("start") if "start" in windows.columns else windows
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
                loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
                opt.step()
                total += float(loss.detach()) * len(batch)
            self.loss_curve_.append(total / max(n, 1))
        self.net_ = to_layers(net.cpu().eval())
        self.feature_names_ = cols
        scores = self._scores(Z)
        self.learning_scores_ = scores
        # the threshold object (``threshold_rule_``), not a number: a DeviceClassifier's
        # ``threshold_`` is its open-set confidence bar
        self.threshold_rule_ = QuantileThreshold(q=self.threshold_q,
                                                 margin=self.threshold_margin,
                                                 floor=self.threshold_floor)
        ref = hold if hold.any() else np.ones(len(dev), dtype=bool)
        self.threshold_rule_.fit(scores[ref], [str(d) for d in dev[ref]])
        self.devices_ = sorted(self.device_mean_)
        names, counts = np.unique(dev, return_counts=True)
        self.learning_windows_ = {str(d): int(c) for d, c in zip(names, counts, strict=True)}
        return self

    def _reconstruct(self, Z: np.ndarray) -> np.ndarray:
        return forward(self.net_, Z)

    def _residual(self, Z: np.ndarray) -> np.ndarray:
        """Reconstruction minus input, in the device's standard deviations."""
        diff = self._reconstruct(Z)
        diff -= Z
        return diff

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(np.square(self._residual(Z)).mean(axis=1, dtype=np.float64))

    # -- scoring ---------------------------------------------------------------------------
    def score(self, windows: pl.DataFrame) -> np.ndarray:
        """Anomaly score per window: higher = more anomalous."""
        return self.deviations(windows, top=0).scores

    def deviations(self, windows: pl.DataFrame, top: int = 5) -> Deviations:
        """Scores and, per window, the ``top`` features that deviate most, as arrays: what
        ``explain`` reports, without building Python objects per window.

        Scored ``DEVIATION_BATCH`` windows at a time: a batch's matrices (features,
        standardised, residuals, squared) take about 3 KB a window, 100 MB for 32,000."""
        check_fitted(self, "net_")
        n, size = windows.height, DEVIATION_BATCH
        if n < 2 * size:
            return self._deviations(windows, top)
        # no batch smaller than ``size``: the last takes the rest
        starts = list(range(0, n - size + 1, size))
        parts = [self._deviations(windows.slice(a, b - a), top)
                 for a, b in zip(starts, [*starts[1:], n], strict=True)]
        return Deviations(np.concatenate([p.scores for p in parts]), parts[0].names,
                          np.concatenate([p.index for p in parts]),
                          np.concatenate([p.observed for p in parts]),
                          np.concatenate([p.expected for p in parts]),
                          np.concatenate([p.share for p in parts]))

    def _deviations(self, windows: pl.DataFrame, top: int) -> Deviations:
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
        # a reconstruction may stray out of the feature's range (a share below 0): what is
        # shown as expected stays inside it
        lo, hi = _bounds(tuple(self.feature_names_))
        expected = np.clip(expected, lo[idx], hi[idx])
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
        return self.threshold_rule_.threshold(devices)

    def learning_status(self, devices: Sequence[str]) -> tuple[list[int | None], list[str]]:
        """Per device: its number of learning windows and its baseline's state: "learned" (a
        threshold of its own), "thin" (too few held-back windows for one: it is judged by the
        site-wide threshold, and its alerts rest on a handful of windows) or "new" (not seen
        while learning)."""
        check_fitted(self, "net_")
        own = self.threshold_rule_.own_
        n: list[int | None] = []
        state: list[str] = []
        for d in map(str, devices):
            if d not in self.device_mean_:
                n.append(None)
                state.append("new")
                continue
            n.append(self.learning_windows_.get(d))
            state.append("learned" if d in own else "thin")
        return n, state

    def known(self, devices: Sequence[str]) -> np.ndarray:
        check_fitted(self, "net_")
        return np.array([str(d) in self.device_mean_ for d in devices], dtype=bool)

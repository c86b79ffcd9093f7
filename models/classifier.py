"""Device-type classifier: LightGBM over window features, calibrated, with an open-set reject."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from flockwatch.features.windows import FEATURE_COLUMNS
from flockwatch.models.base import check_fitted, feature_matrix, group_folds, parallel_map

UNKNOWN = "unknown"


#: Below this many rows a prediction runs on one thread: OpenMP's start-up and spinning cost
#: more than the trees (a request of 8 windows: 0.2 ms on one thread, 10-20 ms on all of a
#: loaded machine's).
SMALL_PREDICT = 2000


def _threads(rows: int) -> dict[str, int]:
    return {"num_threads": 1} if rows < SMALL_PREDICT else {}


#: Windows per device (its latest) whose contributions ``type_contributions`` averages:
#: TreeSHAP costs about ten predictions a window (0.5 ms on 2 cores), 2.5 ms a device.
CONTRIB_WINDOWS = 5
#: One reason for a device's type: a behaviour feature or a piece of product evidence.
TYPE_EVIDENCE = pl.List(pl.Struct({"kind": pl.String, "name": pl.String, "label": pl.String,
                                   "value": pl.String, "weight": pl.Float64}))


def _empty_contributions(by: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(schema={**{k: pl.String() for k in by}, "type_evidence": TYPE_EVIDENCE})


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _mean_by(p: np.ndarray, dev_of: np.ndarray, n_dev: int) -> np.ndarray:
    """Mean of the rows of ``p`` per device (``dev_of``: device index of each row)."""
    agg = np.zeros((n_dev, p.shape[1]))
    np.add.at(agg, dev_of, p)
    agg /= np.maximum(np.bincount(dev_of, minlength=n_dev), 1)[:, None]
    return agg


#: Fits a LightGBM booster: ``(params, X, y, weight, rounds) -> lightgbm.Booster``.
Trainer = Callable[[dict[str, object], np.ndarray, np.ndarray, np.ndarray, int], Any]


class DeviceClassifier:
    """LightGBM device-type classifier with temperature calibration and an "unknown" decision.

    ``fit`` holds out whole groups (captures), fold by fold, to pick the number of boosting
    rounds (early stopping), fit a temperature that calibrates the class probabilities, and
    learn the rejection rule. A device is ``unknown`` when its aggregated confidence falls below the
    ``reject_quantile / 2`` quantile of correctly classified held-out devices' confidence, or
    when its behaviour lies farther from every training window of the predicted type than the
    ``1 - reject_quantile / 2`` quantile of those held-out devices (novelty): confident mistakes
    on never-seen types are common, distance catches many of them.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples
        LightGBM hyper-parameters (upper bound of rounds; early stopping picks the number).
    reject_quantile
        Share of correctly classified held-out devices the rejection rule would call
        "unknown" (half by confidence, half by novelty); 0 never answers "unknown". The
        trade-off: higher values catch more never-seen types and reject more known ones.
        ``set_reject_quantile`` re-tunes a fitted classifier.
    calibration_folds
        ``fit`` holds out each of this many folds of groups in turn (cross-fitting): the
        held-out predictions choose the number of rounds, calibrate and learn the rejection.
    min_improvement
        Early stopping counts a round as better only when it lowers the held-out log loss by
        more than this: once the types are separated, rounds that merely sharpen already
        confident probabilities cost prediction time and buy no accuracy (on IoT Sentinel,
        0.01 halves the trees at the same macro F1).
    seed
        Makes ``fit`` repeatable.
    n_jobs
        Models ``fit`` trains side by side (the cross-fitting folds), one thread each; None
        uses every core. The fitted model does not depend on it.
    """

    def __init__(self, *, n_estimators: int = 400, learning_rate: float = 0.05,
                 num_leaves: int = 31, min_child_samples: int = 3,
                 reject_quantile: float = 0.04, calibration_folds: int = 4,
                 min_improvement: float = 0.01,
                 feature_columns: Sequence[str] | None = None, seed: int | None = 0,
                 n_jobs: int | None = None) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.reject_quantile = reject_quantile
        self.calibration_folds = calibration_folds
        self.min_improvement = min_improvement
        self.feature_columns = feature_columns
        self.seed = seed
        self.n_jobs = n_jobs
        self.booster_: Any = None

    # -- fitting ---------------------------------------------------------------------------
    def _params(self, n_classes: int) -> dict[str, object]:
        return {
            "objective": "multiclass", "num_class": n_classes, "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": 0.8, "bagging_fraction": 0.9, "bagging_freq": 1,
            "lambda_l2": 1.0, "verbose": -1, "seed": self.seed or 0, "deterministic": True,
            # One thread a model (models train side by side instead, see n_jobs): on a few
            # thousand windows LightGBM's threads wait on each other more than they work,
            # and on a busy machine two threads made a fit ten to twenty times slower. With
            # deterministic=True the model does not depend on the thread count.
            "num_threads": 1, "force_row_wise": True,
        }

    def fit(self, windows: pl.DataFrame, y: Sequence[str] | pl.Series,
            groups: Sequence[str] | pl.Series | None = None,
            *, units: Sequence[str] | None = None,
            on_step: Callable[[str, int, int], None] | None = None,
            trainer: Trainer | None = None) -> DeviceClassifier:
        """Learn from windows with labels ``y``; ``groups`` (capture ids) keep splits honest.

        ``on_step(phase, done, total)`` hears as each phase starts (``done`` 0) and as each
        of its steps ends: the ``cross-fitting`` folds, ``calibration`` and the ``final
        fit`` (a fit takes seconds to minutes, and a progress bar tells which part).
        ``units`` (default: the groups) are what the held-out probabilities ``oof_proba_`` are
        averaged over, e.g. one labelled device of a capture holding several.
        ``trainer(params, X, y, weight, rounds)`` fits the final model on every window
        instead of ``lightgbm.train`` (``training.distributed``: LightGBM's Dask interface,
        for window sets too large for one process); the cross-fitting stays here."""
        import lightgbm as lgb

        step = on_step or (lambda phase, done, total: None)

        cols = list(self.feature_columns or FEATURE_COLUMNS)
        X = feature_matrix(windows, cols)
        y_arr = np.asarray(y, dtype=object)
        if len(y_arr) != X.shape[0]:
            raise ValueError(f"y has {len(y_arr)} labels for {X.shape[0]} windows")
        classes = np.array(sorted(set(y_arr.tolist())))
        if len(classes) < 2:
            raise ValueError("need at least two device types to train a classifier")
        g = np.asarray(groups if groups is not None else np.arange(len(y_arr)), dtype=object)
        yi = np.searchsorted(classes, y_arr)
        weights = self._balanced_weights(yi, len(classes))
        params = self._params(len(classes))
        # Cross-fitting: every group is held out once, by a model trained on the other folds.
        # The held-out predictions of all groups (not of one small hold-out) set the number of
        # rounds, the temperature and the rejection thresholds, so their quantiles rest on every
        # training capture.
        fold = group_folds(yi, g, self.calibration_folds, self.seed or 0)
        n_folds = int(fold.max()) + 1 if len(fold) else 0
        raw = np.zeros((len(yi), len(classes)))
        covered = np.zeros(len(yi), dtype=bool)
        rounds, conf, nov = [], [], []

        def probe(f: int) -> tuple[np.ndarray, int, np.ndarray] | None:
            hold = fold == f
            seen = np.unique(yi[~hold])
            if not hold.any() or len(seen) < 2:
                return None
            # Only windows of types the fold's model was trained on can calibrate it.
            use = hold & np.isin(yi, seen)
            if not use.any():
                return None
            dtrain = lgb.Dataset(X[~hold], yi[~hold], weight=weights[~hold])
            dval = lgb.Dataset(X[use], yi[use], weight=weights[use], reference=dtrain)
            booster = lgb.train(params, dtrain, self.n_estimators, valid_sets=[dval],
                                callbacks=[lgb.early_stopping(30, verbose=False,
                                                              min_delta=self.min_improvement)])
            best_f = booster.best_iteration or self.n_estimators
            return use, best_f, np.asarray(booster.predict(
                X[use], num_iteration=best_f, raw_score=True)).reshape(int(use.sum()), -1)

        # The folds' models are independent: they train side by side, in folds order.
        step("cross-fitting", 0, n_folds)
        for f, res in enumerate(parallel_map(probe, range(n_folds), self.n_jobs)):
            if res is not None:
                use, best_f, raw_f = res
                rounds.append(best_f)
                raw[use] = raw_f
                covered |= use
            step("cross-fitting", f + 1, n_folds)
        step("calibration", 0, 1)
        if covered.any():
            best = max(20, int(round(float(np.median(rounds)))))
            self.temperature_ = self._fit_temperature(raw[covered], yi[covered])
            p_out = _softmax(raw / self.temperature_)
            # Novelty of each held-out group against the training windows of its fold.
            for f in range(n_folds):
                use = covered & (fold == f)
                if use.any():
                    self._fit_reference(X[~(fold == f)], yi[~(fold == f)], len(classes))
                    c, n = self._group_stats(p_out[use], X[use], yi[use], g[use])
                    conf.append(c)
                    nov.append(n)
            conf_a = np.concatenate(conf) if conf else np.zeros(0)
            nov_a = np.concatenate(nov) if nov else np.zeros(0)
        else:
            best, self.temperature_ = self.n_estimators, 1.0
            conf_a, nov_a = np.zeros(0), np.zeros(0)
        # Held-out (cross-fitted) probabilities of each group, its windows averaged as
        # ``predict_devices`` does: what ``DeviceIdentifier`` combines with the evidence and
        # calibrates its prediction sets on. A group (capture) is a few floats a class.
        self.oof_groups_, self.oof_proba_ = self._group_proba(
            _softmax(raw / self.temperature_)[covered],
            (g if units is None else np.asarray(units, dtype=object))[covered])
        # Kept (a few KB) so that the rejection can be re-tuned without refitting.
        self.calibration_confidence_ = conf_a.astype(np.float32)
        self.calibration_novelty_ = nov_a.astype(np.float32)
        self.set_reject_quantile(self.reject_quantile)
        self._fit_reference(X, yi, len(classes))
        step("calibration", 1, 1)
        step("final fit", 0, 1)
        # Final model on every window with the chosen number of rounds.
        if trainer is not None:
            self.booster_ = trainer(params, X, yi, weights, int(best))
        else:
            self.booster_ = lgb.train(params, lgb.Dataset(X, yi, weight=weights), best)
        step("final fit", 1, 1)
        self.best_iteration_ = int(best)
        self.classes_ = classes
        self.feature_names_ = cols
        self.calibration_groups_ = int(len(np.unique(g[covered])))
        return self

    def set_reject_quantile(self, reject_quantile: float) -> DeviceClassifier:
        """Re-tune the open-set rejection without refitting: the thresholds become the
        ``reject_quantile / 2`` quantile of correctly classified held-out devices' confidence
        and the ``1 - reject_quantile / 2`` quantile of their novelty (0 turns "unknown" off).
        Higher values call more never-seen types unknown and reject more known devices."""
        if not 0.0 <= reject_quantile < 1.0:
            raise ValueError(f"reject_quantile must be in [0, 1), got {reject_quantile}")
        conf_a, nov_a = self.calibration_confidence_, self.calibration_novelty_
        q = reject_quantile / 2
        self.reject_quantile = reject_quantile
        self.threshold_ = float(np.quantile(conf_a, q)) if len(conf_a) and q > 0 else 0.0
        self.novelty_threshold_ = (float(np.quantile(nov_a, 1 - q)) if len(nov_a) and q > 0
                                   else np.inf)
        return self

    @staticmethod
    def _balanced_weights(yi: np.ndarray, n: int) -> np.ndarray:
        counts = np.bincount(yi, minlength=n).astype(float)
        return np.asarray((len(yi) / (n * np.maximum(counts, 1)))[yi])

    @staticmethod
    def _fit_temperature(raw: np.ndarray, yi: np.ndarray) -> float:
        best_t, best_nll = 1.0, np.inf
        for t in np.exp(np.linspace(np.log(0.25), np.log(8.0), 40)):
            p = _softmax(raw / t)
            nll = -np.mean(np.log(np.clip(p[np.arange(len(yi)), yi], 1e-12, None)))
            if nll < best_nll:
                best_t, best_nll = float(t), nll
        return best_t

    def _fit_reference(self, X: np.ndarray, yi: np.ndarray, n_classes: int) -> None:
        """Standardised training windows per class, for the novelty distance."""
        rng = np.random.default_rng(self.seed)
        self.ref_mean_ = X.mean(axis=0)
        self.ref_std_ = np.maximum(X.std(axis=0), 1e-3)
        Z = (X - self.ref_mean_) / self.ref_std_
        self.reference_ = []
        for c in range(n_classes):
            zc = Z[yi == c]
            if len(zc) > 2000:
                zc = zc[rng.choice(len(zc), 2000, replace=False)]
            self.reference_.append(zc.astype(np.float32))

    def _novelty(self, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Distance (RMS over features) to the nearest training window of each row's class."""
        Z = ((X - self.ref_mean_) / self.ref_std_).astype(np.float32)
        out = np.full(len(X), np.inf)
        for c in np.unique(classes):
            ref = self.reference_[int(c)]
            if not len(ref):
                continue
            m = classes == c
            z = Z[m]
            # |z - r|^2 = |z|^2 + |r|^2 - 2 z.r, as one matrix product per class.
            d2 = (z * z).sum(axis=1)[:, None] + (ref * ref).sum(axis=1)[None, :] - 2 * z @ ref.T
            out[m] = np.sqrt(np.maximum(d2.min(axis=1), 0.0) / Z.shape[1])
        return out

    def _aggregate(self, p: np.ndarray, X: np.ndarray, dev_of: np.ndarray, n_dev: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Per device (``dev_of``: device index of each window): the mean of its windows'
        probabilities, and its novelty, the median distance of its windows to the device's
        predicted type (robust to a few odd windows), computed per class for all devices at
        once."""
        agg = _mean_by(p, dev_of, n_dev)
        win_nov = self._novelty(X, agg.argmax(axis=1)[dev_of])
        nov = pl.DataFrame({"d": dev_of, "n": win_nov}).group_by("d").agg(
            pl.col("n").median()).sort("d")["n"].to_numpy()
        return agg, nov

    @staticmethod
    def _group_proba(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean probabilities per group: (groups, their probabilities)."""
        if not len(p):
            return np.array([], dtype=object), np.zeros((0, p.shape[1] if p.ndim == 2 else 0),
                                                        dtype=np.float32)
        groups, dev_of = np.unique(g.astype(str), return_inverse=True)
        return groups.astype(object), _mean_by(p, dev_of, len(groups)).astype(np.float32)

    def _group_stats(self, p: np.ndarray, X: np.ndarray, yi: np.ndarray, g: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Confidence and novelty of each correctly classified held-out group."""
        _, first, dev_of = np.unique(g, return_index=True, return_inverse=True)
        agg, nov = self._aggregate(p, X, dev_of, len(first))
        right = agg.argmax(axis=1) == yi[first]
        return agg.max(axis=1)[right], nov[right]

    # -- prediction ------------------------------------------------------------------------
    def predict_proba(self, windows: pl.DataFrame, X: np.ndarray | None = None) -> np.ndarray:
        """Calibrated class probabilities per window (columns follow ``classes_``)."""
        check_fitted(self, "booster_")
        if X is None:
            X = feature_matrix(windows, self.feature_names_)
        raw = self.booster_.predict(X, raw_score=True, **_threads(len(X)))
        return _softmax(np.asarray(raw).reshape(len(X), -1) / self.temperature_)

    def decide(self, proba: np.ndarray, novelty: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label, confidence, unknown) from (aggregated) probabilities and, when given, each
        device's novelty (see ``_aggregate``)."""
        check_fitted(self, "booster_")
        conf = proba.max(axis=1) if len(proba) else np.zeros(0)
        labels = self.classes_[proba.argmax(axis=1)] if len(proba) else np.array([], dtype=object)
        unknown = self.rejects(conf, novelty if len(proba) else None)
        return np.where(unknown, UNKNOWN, labels).astype(object), conf, unknown

    def rejects(self, confidence: np.ndarray, novelty: np.ndarray | None = None) -> np.ndarray:
        """The open-set rule at the current ``reject_quantile``: which devices, by their
        confidence and (when given) novelty, are "unknown"."""
        # At the precision the held-out figures are kept in (float32): a confidence of
        # 0.9999999994 is 1.0 there, and must not fall below a threshold of 1.0.
        unknown = np.asarray(confidence, dtype=np.float32) < self.threshold_
        if novelty is not None:
            unknown |= np.asarray(novelty, dtype=np.float32) > self.novelty_threshold_
        return unknown

    def predict(self, windows: pl.DataFrame) -> np.ndarray:
        """Per-window device type, or "unknown" by confidence alone (the novelty rule is
        calibrated on devices' aggregated windows: see ``predict_devices``)."""
        return self.decide(self.predict_proba(windows))[0]

    def device_proba(self, windows: pl.DataFrame, by: Sequence[str] = ("source", "device_id"),
                     X: np.ndarray | None = None, *, novelty: bool = True
                     ) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """Per device (the ``by`` columns, in order of first appearance): the mean of its
        windows' probabilities (columns follow ``classes_``) and its novelty (zeros with
        ``novelty=False``). ``X``: the windows' feature matrix, when the caller has it."""
        if X is None:
            X = feature_matrix(windows, self.feature_names_)
        p = self.predict_proba(windows, X)
        keys = windows.select(list(by)).with_row_index("_row")
        groups = keys.group_by(list(by), maintain_order=True).agg(pl.col("_row"))
        if groups.height:
            dev_of = np.empty(len(p), dtype=np.int64)
            dev_of[groups["_row"].explode().to_numpy()] = np.repeat(
                np.arange(groups.height), groups["_row"].list.len().to_numpy())
            if novelty:
                agg, nov = self._aggregate(p, X, dev_of, groups.height)
            else:
                agg, nov = _mean_by(p, dev_of, groups.height), np.zeros(groups.height)
        else:
            agg, nov = np.zeros((0, len(self.classes_))), np.zeros(0)
        return groups.drop("_row"), agg, nov

    def predict_devices(self, windows: pl.DataFrame, by: Sequence[str] = ("source", "device_id")
                        ) -> pl.DataFrame:
        """Aggregate windows' probabilities per device: one decision per device."""
        groups, agg, nov = self.device_proba(windows, by)
        label, conf, unknown = self.decide(agg, nov)
        closest = self.classes_[agg.argmax(axis=1)] if len(agg) else np.array([], dtype=object)
        return groups.with_columns(
            pl.Series("device_type", label.tolist(), dtype=pl.String),
            pl.Series("type_confidence", conf.astype(float)),
            pl.Series("unknown", unknown.astype(bool)),
            # the most probable known type, also for devices ruled unknown
            pl.Series("closest_type", closest.tolist(), dtype=pl.String),
            pl.Series("type_novelty", np.asarray(nov, dtype=float)),
        )

    def type_contributions(self, windows: pl.DataFrame, types: pl.DataFrame,
                           by: Sequence[str] = ("source", "device_id"), top: int = 5
                           ) -> pl.DataFrame:
        """Why behaviour points each device to its type: the features whose TreeSHAP
        contributions (LightGBM's ``pred_contrib``) to that type's score are largest, averaged
        over the device's latest ``CONTRIB_WINDOWS`` windows. ``types``: the ``by`` columns
        and ``nearest_type``. Returns the ``by`` columns and ``type_evidence`` (kind
        ``behaviour``, the feature, its label, the device's mean value in its units, the
        weight in log-odds)."""
        from flockwatch.features.explain import feature_label, present

        check_fitted(self, "booster_")
        by = list(by)
        out = _empty_contributions(by)
        if windows.height == 0 or types.height == 0:
            return out
        w = windows.join(types.select(*by, "nearest_type"), on=by).filter(
            pl.col("nearest_type").is_in(self.classes_.tolist()))
        if w.height == 0:
            return out
        w = w.sort("start", descending=True).group_by(by, maintain_order=True).head(
            CONTRIB_WINDOWS)
        X = feature_matrix(w, self.feature_names_)
        F, K = len(self.feature_names_), len(self.classes_)
        raw = np.asarray(self.booster_.predict(X, pred_contrib=True, **_threads(len(X))))
        contrib = raw.reshape(len(X), K, F + 1)[:, :, :F]
        cls = {c: i for i, c in enumerate(self.classes_.tolist())}
        k = np.array([cls[t] for t in w["nearest_type"].to_list()])
        own = contrib[np.arange(len(X)), k]
        groups = w.select(by).with_row_index("_r").group_by(by, maintain_order=True).agg("_r")
        rows = []
        for r in groups.iter_rows(named=True):
            idx = np.asarray(r.pop("_r"))
            m, xv = own[idx].mean(axis=0), X[idx].mean(axis=0)
            items = [{"kind": "behaviour", "name": self.feature_names_[j],
                      "label": feature_label(self.feature_names_[j]),
                      "value": present(self.feature_names_[j], float(xv[j])),
                      "weight": round(float(m[j]), 3)}
                     for j in np.argsort(-m)[:top] if m[j] > 0]
            rows.append({**r, "type_evidence": items})
        return pl.DataFrame(rows, schema=out.schema)

    def feature_importance(self) -> dict[str, float]:
        check_fitted(self, "booster_")
        gains = self.booster_.feature_importance("gain")
        return dict(zip(self.feature_names_, map(float, gains), strict=True))

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        if state.get("booster_") is not None:
            state["booster_"] = self.booster_.model_to_string()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        booster = state.get("booster_")
        if isinstance(booster, str):
            import lightgbm as lgb

            state["booster_"] = lgb.Booster(model_str=booster)
        self.__dict__.update(state)

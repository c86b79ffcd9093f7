"""Device identity in three levels (category, vendor, model), from behaviour and product
evidence, with prediction sets where models cannot be told apart.

Why two experts. The behaviour classifier (``DeviceClassifier``, LightGBM over window
features) separates the types of the lab it learnt in (held-out captures of the same lab:
macro F1 0.97), but volume, timing and mix move with the site: at another lab the same
products came back as the wrong model for 28 of 36 captures. Product evidence
(``features.evidence``: OUI vendor, DHCP lists, cloud domains, SSDP/mDNS strings, user agents,
JA4) transfers: comparing only evidence named 27 of the 36. So the evidence leads and behaviour
breaks its ties (the Edimax SP-1101W/SP-2101W twins, D-Link's sensors, which share cloud,
DHCP list and vendor):

    p(type) ~ p_evidence(type) * ((1 - site_shift) * p_behaviour(type) + site_shift / K)

``p_evidence`` is a softmax over the tf-idf cosine of the device's evidence with each type's
profile, its sharpness fitted on held-out captures; ``site_shift`` is the share of behaviour's
answer not trusted at a new site, which caps how far behaviour can overrule evidence (a factor
of at most ``1 + (1 - site_shift) * K / site_shift``). A device without evidence (a Zeek log
without names, traffic without layer 2) is judged by behaviour alone.

Open set. A device is ``unknown`` at model level when its evidence contradicts every known
product: its cosine with every type's profile is below the ``reject_quantile`` quantile of
held-out known devices' best cosine, over whole captures and their slices (first seconds,
steady state), so that a short look at a known product is not taken for a new one; or when
more than ``max_novelty`` (half) of its evidence weight is tokens no known product shows (a
new vendor, a new cloud: a new product of a known vendor keeps the OUI but not the rest).
Tokens never seen in training weigh more than the rarest known ones, so they also pull the
cosine down. Behavioural distance is not used: a known product at a new site is far from its
training windows too.

Levels. ``category`` and ``vendor`` sum the type probabilities of their members, so "TP-Link,
smart plug" stands where the model is in doubt between two TP-Link plugs. Where the model is
``unknown``, the category comes from a category classifier over behaviour (trained on every
type of each category, so it can place a product it has never seen), and the vendor from the
OUI prefix, mapped to the vendor names of the labels where training saw the prefix.

Prediction sets. Split-conformal (least ambiguous set-valued classifier): on held-out
captures (cross-fitted), the score of a capture is 1 - p(its true type); ``candidates`` are the
types whose probability reaches 1 - q, q the ``coverage`` quantile of those scores, so that
``coverage`` of captures like the calibration ones have their type in the set. The
calibration captures are those the open-set rule accepts (an unknown device has no set), so
the coverage is that of devices given a model answer.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import polars as pl

from flockwatch.features.evidence import EVIDENCE_KINDS
from flockwatch.models.base import check_fitted, feature_matrix, group_folds
from flockwatch.models.classifier import UNKNOWN, DeviceClassifier, Trainer, _softmax


class EvidenceModel:
    """Type profiles over product-evidence tokens; similarity is the tf-idf cosine.

    A token's weight is ``log(1 + K / types showing it)`` (K types): a DHCP list that half
    the types send says little, a cloud domain only one type asks for says much. A token no
    training type showed weighs as one shown by half a type (more than any known token), so a
    never-seen vendor or cloud pulls a device away from every profile. A profile is the mean
    weighted presence vector of a type's samples."""

    def __init__(self) -> None:
        self.vocab_: dict[str, int] | None = None

    def _vocab(self) -> dict[str, int]:
        check_fitted(self, "vocab_")
        assert self.vocab_ is not None
        return self.vocab_

    def fit(self, tokens: Sequence[Sequence[str]], y: Sequence[str], classes: Sequence[str]
            ) -> EvidenceModel:
        self.classes_ = np.asarray(classes, dtype=object)
        idx = {c: i for i, c in enumerate(self.classes_)}
        vocab: dict[str, int] = {}
        for ts in tokens:
            for t in ts:
                vocab.setdefault(t, len(vocab))
        K = len(self.classes_)
        M = np.zeros((K, len(vocab)))
        counts = np.zeros(K)
        for ts, lab in zip(tokens, y, strict=True):
            k = idx[lab]
            counts[k] += 1
            for t in set(ts):
                M[k, vocab[t]] += 1
        M /= np.maximum(counts, 1)[:, None]
        df = (M > 0).sum(axis=0)
        self.vocab_ = vocab
        self.idf_ = np.log1p(K / np.maximum(df, 1))
        self.unseen_idf_ = float(np.log1p(2 * K))
        prof = M * self.idf_[None, :]
        self.profile_norm_ = np.linalg.norm(prof, axis=1)
        self.profiles_ = (prof / np.maximum(self.profile_norm_, 1e-12)[:, None]).astype(
            np.float32)
        return self

    def similarity(self, tokens: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(cosine of each sample with each type's profile, whether the sample has any
        evidence at all)."""
        vocab = self._vocab()
        n, K = len(tokens), len(self.classes_)
        sims = np.zeros((n, K))
        has = np.zeros(n, dtype=bool)
        for i, sample in enumerate(tokens):
            ts = sorted(set(sample))  # one summation order on every run
            if not ts:
                continue
            has[i] = True
            known = [vocab[t] for t in ts if t in vocab]
            w = self.idf_[known]
            norm2 = float((w * w).sum()) + self.unseen_idf_ ** 2 * (len(ts) - len(known))
            if known:
                sims[i] = (self.profiles_[:, known] @ w) / math.sqrt(norm2)
        return sims, has


    def contributions(self, tokens: Sequence[str], label: str, top: int = 5
                      ) -> list[tuple[str, float]]:
        """The tokens that bring a sample closest to ``label``'s profile: each one's share
        of the cosine, largest first (tokens the profile lacks contribute nothing)."""
        vocab = self._vocab()
        where = np.flatnonzero(self.classes_ == label)
        ts = sorted(set(tokens))  # sorted: equal shares come out in one order on every run
        known = [t for t in ts if t in vocab]
        if not len(where) or not known:
            return []
        cols = [vocab[t] for t in known]
        w = self.idf_[cols]
        norm = math.sqrt(float((w * w).sum()) + self.unseen_idf_ ** 2 * (len(ts) - len(known)))
        share = self.profiles_[int(where[0]), cols] * w / norm
        order = np.argsort(-share, kind="stable")[:top]
        return [(known[i], round(float(share[i]), 3)) for i in order if share[i] > 0]

    def novelty(self, tokens: Sequence[Sequence[str]]) -> np.ndarray:
        """Share of each sample's evidence weight (squared, as in the cosine) carried by
        tokens no training type showed; 0 for a sample without evidence."""
        vocab = self._vocab()
        out = np.zeros(len(tokens))
        for i, sample in enumerate(tokens):
            ts = sorted(set(sample))
            known = [vocab[t] for t in ts if t in vocab]
            unseen = self.unseen_idf_ ** 2 * (len(ts) - len(known))
            total = float((self.idf_[known] ** 2).sum()) + unseen
            out[i] = unseen / total if total else 0.0
        return out


def _level_map(classes: Sequence[str], of: Mapping[str, str | None]
               ) -> tuple[list[str], np.ndarray]:
    """(distinct values, K x V membership matrix) of a type -> category/vendor map."""
    values = sorted({v for c in classes if (v := of.get(c))})
    pos = {v: i for i, v in enumerate(values)}
    A = np.zeros((len(classes), len(values)))
    for k, c in enumerate(classes):
        v = of.get(c)
        if v:
            A[k, pos[v]] = 1.0
    return values, A


class DeviceIdentifier:
    """Category, vendor and model of each device, each with its confidence, and the set of
    candidate models (see the module docstring for the rules).

    Parameters
    ----------
    coverage
        Share of devices of known types whose type is in ``candidates`` (split-conformal,
        calibrated on held-out captures).
    site_shift
        Share of the behaviour classifier's answer that is not trusted (at a new site its
        timing and volume mislead). 0 trusts it fully, 1 ignores it.
    reject_quantile
        Share of held-out known devices (whole captures and their slices) whose evidence
        similarity the open-set rule would call too low ("unknown"); 0 turns the open-set rule
        off (never "unknown").
    max_novelty
        A device is also "unknown" when more than this share of its evidence weight is tokens
        no known product shows (a never-seen vendor, cloud or stack); 1 turns that part off.
    calibration_folds, seed, n_jobs
        Cross-fitting folds, randomness, and models trained side by side.
    behaviour_params
        Keyword arguments of the ``DeviceClassifier`` of behaviour.
    """

    def __init__(self, *, coverage: float = 0.95, site_shift: float = 0.8,
                 reject_quantile: float = 0.04, max_novelty: float = 0.5,
                 calibration_folds: int = 4,
                 seed: int | None = 0, n_jobs: int | None = None,
                 behaviour_params: dict[str, Any] | None = None) -> None:
        self.coverage = coverage
        self.site_shift = site_shift
        self.reject_quantile = reject_quantile
        self.max_novelty = max_novelty
        self.calibration_folds = calibration_folds
        self.seed = seed
        self.n_jobs = n_jobs
        self.behaviour_params = behaviour_params
        self.behaviour_: DeviceClassifier | None = None

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, windows: pl.DataFrame, y: Sequence[str] | pl.Series,
            groups: Sequence[str] | pl.Series,
            evidence: Mapping[tuple[str, str], Sequence[Sequence[str]]], *,
            categories: Mapping[str, str | None] | None = None,
            vendors: Mapping[str, str | None] | None = None,
            on_step: Callable[[str, int, int], None] | None = None,
            trainer: Trainer | None = None) -> DeviceIdentifier:
        """Learn from windows (labels ``y``, capture ``groups``) and the product evidence of
        each (group, label): ``evidence[(group, label)]`` is a list of token lists, the first
        the whole capture's and any further ones slices of it (its first seconds, its later
        part), so that a profile expects what a short or a steady-state capture shows.
        ``categories`` and ``vendors`` map each type to its category and maker. ``trainer``:
        the final fits of the behaviour and category classifiers (``DeviceClassifier.fit``)."""
        step = on_step or (lambda phase, done, total: None)
        params = {"reject_quantile": 0.0, **(self.behaviour_params or {})}
        y_a = np.asarray(y, dtype=object)
        g_a = np.asarray(groups, dtype=object).astype(str)
        # One answer is learnt per (capture group, label): a capture may hold several devices.
        unit_of = {(gg, lab): i for i, (gg, lab) in enumerate(
            dict.fromkeys(zip(g_a.tolist(), y_a.tolist(), strict=True)))}
        units = [str(unit_of[(gg, lab)]) for gg, lab in zip(g_a.tolist(), y_a.tolist(),
                                                             strict=True)]
        self.behaviour_ = DeviceClassifier(seed=self.seed, n_jobs=self.n_jobs,
                                           calibration_folds=self.calibration_folds,
                                           **params).fit(windows, y, groups, units=units,
                                                         on_step=step, trainer=trainer)
        classes = list(self.behaviour_.classes_)
        self.classes_ = np.asarray(classes, dtype=object)
        K = len(classes)
        self.categories_ = {c: (categories or {}).get(c) for c in classes}
        self.vendors_ = {c: (vendors or {}).get(c) for c in classes}
        self.category_values_, self._cat_A = _level_map(classes, self.categories_)
        self.vendor_values_, self._ven_A = _level_map(classes, self.vendors_)

        # Per unit: its label, its capture group, its evidence samples.
        U = list(unit_of)
        Gy = [lab for _, lab in U]
        Gg = [gg for gg, _ in U]
        samples = [list(evidence.get(u) or [[]]) for u in U]

        # Category classifier: places a never-seen product by the behaviour of its category.
        self.category_model_: DeviceClassifier | None = None
        cat_y = [self.categories_.get(lab) for lab in y_a.tolist()]
        step("category model", 0, 1)
        if all(cat_y) and len(set(cat_y)) >= 2:
            self.category_model_ = DeviceClassifier(
                seed=self.seed, n_jobs=self.n_jobs, calibration_folds=self.calibration_folds,
                **params).fit(windows, cast("list[str]", cat_y), groups,  # all(cat_y): no None
                             trainer=trainer)
        step("category model", 1, 1)

        # Cross-fitted evidence similarities of every group's whole-capture sample.
        step("evidence profiles", 0, 1)
        folds = group_folds(Gy, Gg, max(2, self.calibration_folds), self.seed or 0)
        view_best: list[np.ndarray] = []
        sims = np.zeros((len(U), K))
        has = np.zeros(len(U), dtype=bool)
        novel = np.zeros(len(U))
        for f in np.unique(folds):
            tr = np.flatnonzero(folds != f)
            te = np.flatnonzero(folds == f)
            toks = [s for i in tr for s in samples[i]]
            labs = [Gy[i] for i in tr for _ in samples[i]]
            em = EvidenceModel().fit(toks, labs, classes)
            s_f, h_f = em.similarity([samples[i][0] for i in te])
            sims[te], has[te] = s_f, h_f
            novel[te] = em.novelty([samples[i][0] for i in te])
            # every view (the first seconds, the steady state) calibrates the open-set rule,
            # so a device met mid-operation, with less evidence, is not rejected for it
            views = [s for i in te for s in samples[i][1:]]
            if views and K:
                s_v, h_v = em.similarity(views)
                view_best.append(s_v.max(axis=1)[h_v])
        self.evidence_ = EvidenceModel().fit([s for ss in samples for s in ss],
                                             [Gy[i] for i, ss in enumerate(samples) for _ in ss],
                                             classes)
        yi = np.searchsorted(self.classes_, np.asarray(Gy, dtype=object))
        self.sharpness_ = self._fit_sharpness(sims[has], yi[has])
        step("evidence profiles", 1, 1)

        # Held-out combined probabilities: conformal sets and the open-set threshold.
        step("prediction sets", 0, 1)
        oof = dict(zip(self.behaviour_.oof_groups_.tolist(), self.behaviour_.oof_proba_,
                       strict=True))
        rows = [i for i in range(len(U)) if str(i) in oof]
        best = sims.max(axis=1) if K else np.zeros(len(U))
        if rows:
            pb = np.stack([oof[str(i)] for i in rows]).astype(float)
            p = self._combine(pb, sims[rows], has[rows])
            scores = 1.0 - p[np.arange(len(rows)), yi[rows]]
        else:
            scores = np.zeros(0)
        # Per calibration unit: its conformal score, and its evidence similarity and novelty
        # (NaN without evidence), so that the sets are calibrated on the devices the open-set
        # rule accepts, whatever ``reject_quantile`` is set to later.
        self.calibration_scores_ = np.asarray(scores, dtype=np.float32)
        self.calibration_similarity_ = np.where(has[rows], best[rows], np.nan).astype(np.float32)
        self.calibration_novelty_ = novel[rows].astype(np.float32)
        self.calibration_evidence_ = np.sort(np.concatenate([best[has], *view_best])).astype(
            np.float32)
        self.set_threshold_ = 1.0
        self.set_reject_quantile(self.reject_quantile)
        # OUI vendor (as the table names it) -> vendor names of the labels
        self.oui_vendors_: dict[str, dict[str, int]] = {}
        for i, ss in enumerate(samples):
            v = self.vendors_.get(Gy[i])
            for t in ss[0]:
                if t.startswith("oui:") and v:
                    self.oui_vendors_.setdefault(t[4:], Counter())[v] += 1
        self.oui_vendors_ = {k: dict(c) for k, c in self.oui_vendors_.items()}
        self.calibration_groups_ = len(rows)
        step("prediction sets", 1, 1)
        return self

    @staticmethod
    def _fit_sharpness(sims: np.ndarray, yi: np.ndarray) -> float:
        """The softmax sharpness that makes held-out evidence probabilities calibrated."""
        if not len(sims):
            return 10.0
        best, best_nll = 10.0, np.inf
        for b in np.exp(np.linspace(np.log(1.0), np.log(200.0), 40)):
            p = _softmax(b * sims)
            nll = -np.mean(np.log(np.clip(p[np.arange(len(yi)), yi], 1e-12, None)))
            if nll < best_nll:
                best, best_nll = float(b), nll
        return best

    def _combine(self, pb: np.ndarray, sims: np.ndarray, has: np.ndarray) -> np.ndarray:
        K = pb.shape[1]
        pe = np.where(has[:, None], _softmax(self.sharpness_ * sims), 1.0 / K)
        p = pe * ((1.0 - self.site_shift) * pb + self.site_shift / K)
        return np.asarray(p / p.sum(axis=1, keepdims=True))

    def set_coverage(self, coverage: float) -> DeviceIdentifier:
        """Re-tune the prediction sets without refitting."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        accepted = ~self.rejects(self.calibration_similarity_, self.calibration_novelty_)
        s = np.sort(self.calibration_scores_[accepted])
        self.coverage = coverage
        if len(s):
            k = min(len(s), int(math.ceil((len(s) + 1) * coverage)))
            self.set_threshold_ = float(s[k - 1])
        else:
            self.set_threshold_ = 1.0
        return self

    def set_reject_quantile(self, reject_quantile: float) -> DeviceIdentifier:
        """Re-tune the open-set rule without refitting (see the class docstring)."""
        if not 0.0 <= reject_quantile < 1.0:
            raise ValueError(f"reject_quantile must be in [0, 1), got {reject_quantile}")
        e = self.calibration_evidence_
        self.reject_quantile = reject_quantile
        self.threshold_ = (float(np.quantile(e, reject_quantile))
                           if len(e) and reject_quantile > 0 else -np.inf)
        # the sets cover the devices the rule accepts: re-calibrated with it
        self.set_coverage(self.coverage)
        return self

    def rejects(self, similarity: Any, novelty: Any = None) -> np.ndarray:
        """The open-set rule at the current ``reject_quantile`` and ``max_novelty``, from
        devices' best evidence similarity (``evidence_similarity``; null for a device without
        evidence, never rejected) and evidence novelty (``evidence_novelty``)."""
        s = np.asarray(pl.Series(similarity, dtype=pl.Float64).fill_null(np.nan).to_numpy(),
                       dtype=float)
        # At the precision the held-out figures are kept in (float32): a similarity of
        # 0.99999999 is 1.0 there, and must not fall below a threshold of 1.0.
        out = ~np.isnan(s) & (np.nan_to_num(s, nan=np.inf).astype(np.float32)
                              < np.float32(self.threshold_))
        if novelty is not None and self.reject_quantile > 0:
            nv = np.asarray(pl.Series(novelty, dtype=pl.Float64).fill_null(0.0).to_numpy(),
                            dtype=float)
            out |= ~np.isnan(s) & (nv > self.max_novelty)
        return np.asarray(out, dtype=bool)

    # -- prediction ------------------------------------------------------------------------
    def predict_devices(self, windows: pl.DataFrame,
                        by: Sequence[str] = ("source", "device_id"),
                        evidence: pl.DataFrame | None = None) -> pl.DataFrame:
        """One answer per device: ``device_type`` (or unknown), ``type_confidence``,
        ``closest_type``, ``candidates`` (JSON list), ``category``, ``category_confidence``,
        ``vendor``, ``vendor_confidence``, ``unknown``, ``evidence_similarity``.
        ``evidence``: the ``by`` columns and an ``evidence`` token list per device
        (``features.evidence.device_evidence``); devices without a row have none."""
        check_fitted(self, "behaviour_")
        assert self.behaviour_ is not None
        X = feature_matrix(windows, self.behaviour_.feature_names_)
        keys, pb, nov = self.behaviour_.device_proba(windows, by, X)
        n, K = keys.height, len(self.classes_)
        toks: list[list[str]] = [[] for _ in range(n)]
        if evidence is not None and evidence.height and n:
            ev = keys.with_row_index("_i").join(evidence.select(*by, "evidence"), on=list(by),
                                                how="inner")
            for i, ts in zip(ev["_i"].to_list(), ev["evidence"].to_list(), strict=True):
                toks[i] = list(ts or [])
        sims, has = self.evidence_.similarity(toks) if n else (np.zeros((0, K)),
                                                                np.zeros(0, bool))
        p = self._combine(pb, sims, has) if n else np.zeros((0, K))
        best = sims.max(axis=1) if n else np.zeros(0)
        novel = self.evidence_.novelty(toks) if n else np.zeros(0)
        unknown = self.rejects(np.where(has, best, np.nan), novel)
        top = p.argmax(axis=1) if n else np.zeros(0, dtype=int)
        conf = p.max(axis=1) if n else np.zeros(0)
        closest = self.classes_[top] if n else np.array([], dtype=object)
        cand = []
        for i in range(n):
            if unknown[i]:
                cand.append("[]")
                continue
            order = np.argsort(-p[i])
            keep = [int(k) for k in order if p[i, k] >= 1.0 - self.set_threshold_]
            if int(top[i]) not in keep:
                keep.insert(0, int(top[i]))
            cand.append(json.dumps([str(self.classes_[k]) for k in keep]))
        cat, cat_conf = self._level(p, self._cat_A, self.category_values_)
        ven, ven_conf = self._level(p, self._ven_A, self.vendor_values_)
        if unknown.any():
            cat, cat_conf = self._unknown_categories(windows, X, by, keys, p, unknown, cat,
                                                     cat_conf)
            cat, cat_conf = self._hinted_categories(toks, unknown, cat, cat_conf)
            ven, ven_conf = self._unknown_vendors(toks, unknown, ven, ven_conf)
        return keys.with_columns(
            pl.Series("device_type", np.where(unknown, UNKNOWN, closest).tolist(),
                      dtype=pl.String),
            pl.Series("type_confidence", conf.astype(float)),
            pl.Series("unknown", unknown.astype(bool)),
            pl.Series("closest_type", closest.tolist(), dtype=pl.String),
            pl.Series("type_novelty", np.asarray(nov, dtype=float)),
            pl.Series("candidates", cand, dtype=pl.String),
            pl.Series("category", cat, dtype=pl.String),
            pl.Series("category_confidence", cat_conf, dtype=pl.Float64),
            pl.Series("vendor", ven, dtype=pl.String),
            pl.Series("vendor_confidence", ven_conf, dtype=pl.Float64),
            pl.Series("evidence_similarity", np.where(has, best, np.nan)).fill_nan(None),
            pl.Series("evidence_novelty", np.where(has, novel, np.nan)).fill_nan(None),
        )

    def type_contributions(self, windows: pl.DataFrame, types: pl.DataFrame,
                           by: Sequence[str] = ("source", "device_id"), top: int = 5,
                           evidence: pl.DataFrame | None = None) -> pl.DataFrame:
        """Why each device is its type: the product evidence that matches the type's profile
        most (kind ``evidence``: the token's kind, its value, its share of the cosine), which
        leads here as it leads the decision, then behaviour's top contributions
        (``DeviceClassifier.type_contributions``)."""
        check_fitted(self, "behaviour_")
        assert self.behaviour_ is not None
        out = self.behaviour_.type_contributions(windows, types, by, top)
        if evidence is None or evidence.height == 0 or types.height == 0:
            return out
        by = list(by)
        ev = types.select(*by, "nearest_type").join(evidence.select(*by, "evidence"), on=by)
        found: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for r in ev.iter_rows(named=True):
            items = []
            for tok, share in self.evidence_.contributions(r["evidence"] or [],
                                                           r["nearest_type"], top):
                kind, _, value = tok.partition(":")
                items.append({"kind": "evidence", "name": tok,
                              "label": EVIDENCE_KINDS.get(kind, kind),
                              "value": value, "weight": share})
            if items:
                found[tuple(r[k] for k in by)] = items
        if not found:
            return out
        rows = {tuple(r[k] for k in by): r["type_evidence"] for r in out.iter_rows(named=True)}
        for key, items in found.items():
            rows[key] = items + list(rows.get(key) or [])
        return pl.DataFrame([{**dict(zip(by, k, strict=True)), "type_evidence": v}
                             for k, v in rows.items()], schema=out.schema)

    @staticmethod
    def _level(p: np.ndarray, A: np.ndarray, values: list[str]
               ) -> tuple[list[str | None], list[float | None]]:
        if not values or not len(p):
            return [None] * len(p), [None] * len(p)
        q = p @ A
        j = q.argmax(axis=1)
        return [values[k] for k in j], [float(x) for x in q.max(axis=1)]

    def _unknown_categories(self, windows: pl.DataFrame, X: np.ndarray, by: Sequence[str],
                            keys: pl.DataFrame, p: np.ndarray,
                            unknown: np.ndarray, cat: list[str | None],
                            conf: list[float | None]) -> tuple[list[str | None],
                                                               list[float | None]]:
        """A never-seen product's category: the mean of two opinions, the category
        classifier's (behaviour of every product of each category) and the categories of the
        known products it is closest to (evidence and behaviour). Neither alone placed more
        than half of IoT Sentinel's left-out types; they err on different ones."""
        cat, conf = list(cat), list(conf)
        if not self.category_values_:
            return cat, conf
        q = p @ self._cat_A
        if self.category_model_ is not None:
            # only the unknown devices' windows: the category model costs a LightGBM pass
            unk = keys.with_row_index("_i").filter(pl.Series(unknown))
            at = windows.select(*by).with_row_index("_r").join(
                unk.select(*by), on=list(by), how="semi")["_r"].to_numpy()
            cm = self.category_model_
            assert self.behaviour_ is not None
            Xc = X if cm.feature_names_ == self.behaviour_.feature_names_ else feature_matrix(
                windows, cm.feature_names_)
            sub_keys, pc, _ = cm.device_proba(windows.select(*by)[at], by, Xc[at],
                                              novelty=False)
            rows = sub_keys.join(unk, on=list(by), how="left")["_i"].to_numpy()
            pos = {str(c): j for j, c in enumerate(self.category_model_.classes_)}
            cols = [pos.get(v) for v in self.category_values_]
            qc = np.zeros_like(q)
            for k, j in enumerate(cols):
                if j is not None:
                    qc[rows, k] = pc[:, j]
            q = q.copy()
            q[rows] = 0.5 * q[rows] + 0.5 * qc[rows]
        for i in np.flatnonzero(unknown):
            j = int(q[i].argmax())
            cat[i], conf[i] = self.category_values_[j], float(q[i, j])
        return cat, conf

    def _hinted_categories(self, toks: list[list[str]], unknown: np.ndarray,
                           cat: list[str | None], conf: list[float | None]
                           ) -> tuple[list[str | None], list[float | None]]:
        """Where a never-seen product's own words name its kind (``category_hints``: a
        camera's ``cam`` cloud host, a printer's ``_ipp._tcp``), that category wins over the
        behavioural guess: named as the training labels name it where they have it, else by
        its own name; no confidence (a rule, not a calibrated probability)."""
        from flockwatch.features.evidence import CATEGORY_WORDS, category_hints

        cat, conf = list(cat), list(conf)
        known = {c.lower(): c for c in self.category_values_}
        for i in np.flatnonzero(unknown):
            hints = category_hints(toks[i])
            if not hints:
                continue
            top = max(sorted(hints), key=lambda c: hints[c])
            aliases = CATEGORY_WORDS[top][1]
            cat[i] = next((known[a] for a in sorted(aliases) if a in known), top)
            conf[i] = None
        return cat, conf

    def _unknown_vendors(self, toks: list[list[str]], unknown: np.ndarray,
                         ven: list[str | None], conf: list[float | None]
                         ) -> tuple[list[str | None], list[float | None]]:
        """A never-seen product's maker: the labels' name for its OUI prefix's owner, where
        training saw the prefix on that maker's products (``TP-Link`` for "Tp-Link
        Technologies Co.,Ltd."; confidence: the share of such devices of that vendor), else
        the OUI table's own name without a confidence. A module maker's prefix (Espressif in
        Smarter's kettles and in two lock hubs) names the module, not the brand: it is never
        mapped to a product vendor whose name differs."""
        ven, conf = list(ven), list(conf)
        for i in np.flatnonzero(unknown):
            oui = next((t[4:] for t in toks[i] if t.startswith("oui:")), None)
            ven[i], conf[i] = None, None
            if oui is None:
                continue
            seen = {v: c for v, c in (self.oui_vendors_.get(oui) or {}).items()
                    if same_maker(v, oui)}
            if seen:
                v, c = max(seen.items(), key=lambda kv: kv[1])
                ven[i], conf[i] = v, c / sum((self.oui_vendors_.get(oui) or {}).values())
            else:
                ven[i] = oui
        return ven, conf

    # -- what the rest of flockwatch asks of a classifier -----------------------------------
    def feature_importance(self) -> dict[str, float]:
        check_fitted(self, "behaviour_")
        assert self.behaviour_ is not None
        return self.behaviour_.feature_importance()

    @property
    def feature_names_(self) -> list[str]:
        assert self.behaviour_ is not None
        return self.behaviour_.feature_names_

    @property
    def temperature_(self) -> float:
        assert self.behaviour_ is not None
        return self.behaviour_.temperature_

    @property
    def best_iteration_(self) -> int:
        assert self.behaviour_ is not None
        return self.behaviour_.best_iteration_

    @property
    def n_estimators(self) -> int:
        assert self.behaviour_ is not None
        return self.behaviour_.n_estimators

    @property
    def learning_rate(self) -> float:
        assert self.behaviour_ is not None
        return self.behaviour_.learning_rate

    @property
    def num_leaves(self) -> int:
        assert self.behaviour_ is not None
        return self.behaviour_.num_leaves


def same_maker(label_vendor: str, oui_vendor: str) -> bool:
    """Whether a labels' vendor name and an OUI table's owner name are one company: their
    first words agree, ignoring case and punctuation ("TP-Link" and "Tp-Link Technologies
    Co.,Ltd.", "Philips" and "Philips Lighting BV"; not "Smarter" and "Espressif Inc.")."""
    def first(name: str) -> str:
        w = re.split(r"[\s,]+", name.strip().lower())[0] if name.strip() else ""
        return re.sub(r"[^0-9a-z]", "", w)

    a, b = first(label_vendor), first(oui_vendor)
    return bool(a) and bool(b) and (a == b or a.startswith(b) or b.startswith(a))


def mean_set_size(candidates: Sequence[str]) -> float:
    """Mean size of ``candidates`` JSON lists (empty lists, unknown devices, excluded)."""
    sizes = [len(json.loads(c)) for c in candidates if c and c != "[]"]
    return float(np.mean(sizes)) if sizes else float("nan")


__all__ = ["DeviceIdentifier", "EvidenceModel", "mean_set_size", "same_maker"]

"""The baseline's explanation of each window, and its output encoding: which features
deviate most, observed against expected, as arrays and as the ``top_features`` JSON column."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from flockwatch.features.explain import (
    describe,
    feature_label,
    hashed_family,
    is_learnt,
)

#: Windows up to which ``Deviations.json`` writes each with ``json.dumps``: polars' column-wise
#: build costs a fixed 2-3 ms, json.dumps about 20 us a window.
SMALL_JSON = 100


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
        if n <= SMALL_JSON:  # a few windows (a REST request): one json.dumps each
            return pl.Series("top_features", [json.dumps(r) for r in
                                              self._finite(self.records())], dtype=pl.String)
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

    @staticmethod
    def _finite(records: list[list[dict[str, float | str]]]
                ) -> list[list[dict[str, float | str | None]]]:
        """JSON has no NaN or infinity: those become null."""
        return [[{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in d.items()} for d in r] for r in records]


#: values of a hashed feature listed per top feature
MAX_VALUES = 10


def explain_windows(out: pl.DataFrame, tokens: pl.DataFrame,
                    vocabulary: dict[str, frozenset[str]] | None) -> pl.DataFrame:
    """Anomalous windows' ``top_features`` as a person reads them: each gets ``label`` and
    ``text`` (the values in the feature's units), and a hashed feature the words or
    fingerprints that fell into its bucket in that window (``values``) and those the device
    never showed while learning (``new_values``, when the model kept a ``vocabulary``).
    Only anomalous windows: they are the ones that become alerts, and the others are many.
    ``tokens`` is ``features.explain.window_tokens`` of (at least) those windows' flows."""
    if "anomalous" not in out.columns:
        return out
    mask = out["anomalous"].fill_null(False)
    rows = mask.arg_true().to_list()
    if not rows:
        return out
    keys = ["source", "device_id", "start", "end"]
    flagged = out[rows].select(*keys, "top_features")
    toks = tokens.join(flagged.select(keys), on=keys, how="semi").select(*keys, "feature", "tok")
    found: dict[tuple[object, ...], list[str]] = {}
    for *key, feature, tok in toks.iter_rows():
        found.setdefault((*key, feature), []).append(tok)
    top = out["top_features"].to_list()
    for i, r in zip(rows, flagged.iter_rows(named=True), strict=True):
        items = json.loads(r["top_features"] or "[]")
        learnt = None if vocabulary is None else vocabulary.get(r["device_id"], frozenset())
        for t in items:
            f = t["feature"]
            t["label"] = feature_label(f)
            t["text"] = describe(f, t["observed"], t["expected"])
            if hashed_family(f) is None:
                continue
            values = found.get((*(r[k] for k in keys), f), [])
            t["values"] = values[:MAX_VALUES]
            shown = ", ".join(values[:5]) + (" ..." if len(values) > 5 else "")
            t["text"] = f"{t['label']}: {shown or 'none'}"
            if learnt is not None:
                new = [v for v in values if not is_learnt(f, v, learnt)]
                t["new_values"] = new[:MAX_VALUES]
                if new:
                    t["text"] += f" (never seen while learning: {', '.join(new[:5])})"
        top[i] = json.dumps(items)
    return out.with_columns(pl.Series("top_features", top, dtype=pl.String))

"""The baseline's explanation of each window, and its output encoding: which features
deviate most, observed against expected, as arrays and as the ``top_features`` JSON column."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import polars as pl


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

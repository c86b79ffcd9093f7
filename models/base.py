"""Shared estimator plumbing: not-fitted errors, feature matrices, seeding."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import polars as pl

T = TypeVar("T")


class NotFittedError(RuntimeError):
    """Raised when ``predict``/``score`` is called before ``fit``."""


def check_fitted(est: object, attr: str) -> None:
    if getattr(est, attr, None) is None:
        raise NotFittedError(f"{type(est).__name__} is not fitted yet: call fit() first")


def group_folds(labels: Sequence[object] | np.ndarray, groups: Sequence[object] | np.ndarray,
                n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number per row: every group in one fold, each label's groups spread over folds."""
    labels_a = np.asarray(labels, dtype=object)
    groups_a = np.asarray(groups, dtype=object)
    rng = np.random.default_rng(seed)
    fold_of: dict[object, int] = {}
    for lab in sorted(set(labels_a.tolist())):
        gs = sorted(set(groups_a[labels_a == lab].tolist()) - set(fold_of))
        rng.shuffle(gs)
        offset = int(rng.integers(0, n_folds))
        for i, g in enumerate(gs):
            fold_of[g] = (i + offset) % n_folds
    return np.array([fold_of[g] for g in groups_a])


def parallel_map(fn: Callable[[int], T], items: Sequence[int], n_jobs: int | None
                 ) -> Iterator[T]:
    """``fn(i) for i in items``, in ``items`` order. ``n_jobs`` is kept for callers and
    ignored: training LightGBM models from two threads at once crashed the process (a
    segmentation fault in dataset construction, seen once in the test suite), so models are
    trained one after another, each on one thread (``DeviceClassifier._params``)."""
    del n_jobs
    yield from (fn(i) for i in items)


def feature_matrix(windows: pl.DataFrame | object, columns: Sequence[str]) -> np.ndarray:
    """The named feature columns as float64, in ``columns`` order (input order is irrelevant)."""
    if not isinstance(windows, pl.DataFrame):
        try:
            windows = pl.from_pandas(windows)
        except Exception:
            raise TypeError(f"expected a polars or pandas DataFrame of windows, got "
                            f"{type(windows).__name__}") from None
    have = set(windows.columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"windows lack feature column(s): {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    # A cast and a fill only where needed: window features are Float64 without nulls, and
    # each pass over 206 columns costs a small request more than its scoring.
    out = windows[list(columns)]  # indexing: select() parses each name (~1 ms)
    if any(dtype != pl.Float64 for dtype in out.schema.values()):
        out = out.cast(pl.Float64)
    if any(out.null_count().row(0)):
        out = out.fill_null(0.0)
    return out.to_numpy()


def get_params(est: object) -> dict[str, object]:
    """Constructor keyword arguments, as stored (estimator convention)."""
    import inspect

    names = [p for p in inspect.signature(type(est).__init__).parameters if p != "self"]
    return {n: getattr(est, n) for n in names}


def clone(est: object) -> object:
    """A new unfitted estimator with the same hyper-parameters."""
    return type(est)(**get_params(est))

"""Training on a Dask cluster: which path a fit takes, and LightGBM's Dask interface.

With ``--cluster``, captures are read (and the flow cache filled) by the workers
(``datasets.labelled.dataset_flows``) and window features computed there
(``features.cluster.windows_on``) for every window set. The classifier's models then train:

- in this process, as without a cluster, when the training windows (whole captures, their
  first seconds and their steady state together) number fewer than ``DASK_MIN_WINDOWS``: on a
  few hundred thousand windows one LightGBM process is faster than any cluster, and the model
  is bit for bit the in-process one;
- from ``DASK_MIN_WINDOWS`` on, the final fits on every window (behaviour and category
  models) go through ``lightgbm.dask.DaskLGBMClassifier``: the window matrix is cut into one
  partition a worker and the workers train one model together (LightGBM's data-parallel tree
  learner), then ``.to_local()`` gives an ordinary booster, pickled into the same pyfunc, so
  sensors cannot tell the difference. The cross-fitting folds (early stopping, calibration,
  rejection thresholds) stay in this process: LightGBM's Dask interface has no early stopping.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Training windows from which the final fits go through LightGBM's Dask interface
#: (module docstring). A window is 206 float64 features, ~1.6 KB: a million is ~1.6 GB of
#: matrix, where one single-threaded fit takes minutes and a cluster's workers share it.
DASK_MIN_WINDOWS = 1_000_000

# DeviceClassifier._params -> DaskLGBMClassifier keyword arguments (the rest pass as they are)
_RENAMED = {"min_data_in_leaf": "min_child_samples", "feature_fraction": "colsample_bytree",
            "bagging_fraction": "subsample", "bagging_freq": "subsample_freq",
            "lambda_l2": "reg_lambda", "seed": "random_state"}


def dask_trainer(client: Any) -> Any:
    """A ``models.classifier.Trainer`` fitting with ``DaskLGBMClassifier`` on ``client``'s
    workers, one partition of rows a worker; returns the local booster."""

    def train(params: dict[str, object], X: np.ndarray, y: np.ndarray, weight: np.ndarray,
              rounds: int) -> Any:
        import importlib

        da: Any = importlib.import_module("dask.array")  # untyped
        wait: Any = importlib.import_module("distributed").wait
        from lightgbm import DaskLGBMClassifier

        n_workers = max(1, len(client.nthreads()))
        order, sizes = stratified_parts(y, n_workers)
        dX = da.from_array(X[order], chunks=(sizes, (X.shape[1],)))
        dy = da.from_array(y[order], chunks=(sizes,))
        dw = da.from_array(weight[order], chunks=(sizes,))
        dX, dy, dw = client.persist([dX, dy, dw])
        wait([dX, dy, dw])
        kwargs: dict[str, Any] = {_RENAMED.get(k, k): v for k, v in params.items()}
        model = DaskLGBMClassifier(client=client, n_estimators=rounds, **kwargs)
        model.fit(dX, dy, sample_weight=dw)
        return model.to_local().booster_

    return train


def stratified_parts(y: np.ndarray, n_parts: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Row order and partition sizes such that every partition holds every class.

    Each worker's ``LGBMClassifier`` encodes the labels of its own partition: a partition
    without some class would number the classes differently from the others and the trees
    would mix them up (measured: macro F1 1.0 in-process, 0.46 through Dask with windows cut
    in source order). So rows are dealt out class by class, and there are no more partitions
    than the rarest class has windows."""
    classes, counts = np.unique(y, return_counts=True)
    n = int(max(1, min(n_parts, int(counts.min()) if len(counts) else 1)))
    rank = np.zeros(len(y), dtype=np.int64)
    for c in classes:
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx)) % n
    order = np.argsort(rank, kind="stable")
    return order, tuple(int(k) for k in np.bincount(rank, minlength=n))


def choose_trainer(client: Any, n_windows: int, min_windows: int = DASK_MIN_WINDOWS) -> Any:
    """``dask_trainer(client)`` from ``min_windows`` training windows on, else None (the
    in-process fit)."""
    if client is None or n_windows < min_windows:
        return None
    return dask_trainer(client)


__all__ = ["DASK_MIN_WINDOWS", "choose_trainer", "dask_trainer", "stratified_parts"]

"""``flockwatch evaluate``: score every labelled capture of a dataset with a model."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flockwatch.datasets.labelled import dataset_flows, labelled_windows, load_dataset
from flockwatch.models.store import load_model
from flockwatch.training.classifier import device_predictions
from flockwatch.training.metrics import classification_metrics


def evaluate_dataset(dataset_dir: str | os.PathLike[str], model_uri: str, *,
                     label_column: str = "device_type",
                     on_file: Callable[[str], None] | None = None,
                     reject_quantile: float | None = None) -> dict[str, Any]:
    """Metrics and one prediction per labelled capture (labels the model does not know count
    as correct only when predicted unknown). ``reject_quantile`` re-decides the model's
    open-set rejection (``DeviceClassifier.set_reject_quantile``) for this evaluation only."""
    bundle = load_model(model_uri).unwrap_python_model().bundle  # type: ignore[attr-defined]
    if bundle.classifier is None:
        raise ValueError(f"{model_uri}: this flockwatch model has no device classifier")
    if reject_quantile is not None:
        bundle.classifier.set_reject_quantile(reject_quantile)
    ds = load_dataset(dataset_dir, label_column)
    flows, problems = dataset_flows(ds, on_file=on_file)
    spec = bundle.classifier_window or bundle.window
    win = labelled_windows(ds, flows, spec, strict=False)
    preds = device_predictions(bundle.classifier, win)
    known = list(bundle.classifier.classes_)
    metrics = classification_metrics(preds["label"].to_list(), preds["device_type"].to_list(),
                                     known=known)
    root = ds.root
    return {
        "model": model_uri,
        "dataset": str(root),
        "reject_quantile": bundle.classifier.reject_quantile,
        "metrics": metrics,
        "predictions": [
            {"path": os.path.relpath(r["capture"], root), "mac": r["device_id"], "true": r["label"],
             "predicted": r["device_type"], "confidence": round(r["type_confidence"], 4),
             "unknown": r["unknown"]}
            for r in preds.iter_rows(named=True)
        ],
        "problems": [str(p) for p in problems],
    }

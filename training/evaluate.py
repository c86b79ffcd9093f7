"""``flockwatch evaluate``: score every labelled capture of a dataset with a model.

A model scored on the captures it was trained on reports memory, not skill (IoT Sentinel:
macro F1 1.000). Classifier models record the content hash of each training capture
(``Bundle.info["training_captures"]``), so the evaluation reports captures the model has seen
apart from held-out ones, and refuses when it has seen them all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import polars as pl

from flockwatch.datasets.labelled import (
    DatasetError,
    capture_evidence,
    dataset_flows,
    file_hash,
    labelled_windows,
    load_dataset,
)
from flockwatch.models.bundle import bundle_of
from flockwatch.models.store import load_model
from flockwatch.training.classifier import device_predictions
from flockwatch.training.metrics import classification_metrics, identity_metrics


def trained_hashes(info: dict[str, Any]) -> set[str] | None:
    """Content hashes of a model's training captures; None for a model that predates the
    record (or was not trained on labelled captures)."""
    rec = info.get("training_captures")
    if rec is None:
        return None
    return {str(c["sha256"]) for c in rec}


def evaluate_dataset(dataset_dir: str | os.PathLike[str], model_uri: str, *,
                     label_column: str = "device_type",
                     on_file: Callable[[str], None] | None = None,
                     reject_quantile: float | None = None,
                     coverage: float | None = None, client: Any = None) -> dict[str, Any]:
    """Metrics and one prediction per labelled capture (labels the model does not know count
    as correct only when predicted unknown). ``reject_quantile`` re-decides the model's
    open-set rejection (``DeviceClassifier.set_reject_quantile``) for this evaluation only.

    ``metrics`` cover the captures the model was not trained on; those it was trained on are
    reported apart (``seen_in_training``) with a line in ``warnings``. Raises
    ``DatasetError`` when every capture was a training capture. ``client``: read the
    captures on that Dask cluster (``features.cluster``)."""
    bundle = bundle_of(load_model(model_uri))
    if bundle.classifier is None:
        raise ValueError(f"{model_uri}: this flockwatch model has no device classifier")
    if reject_quantile is not None:
        bundle.classifier.set_reject_quantile(reject_quantile)
    if coverage is not None:
        bundle.classifier.set_coverage(coverage)
    ds = load_dataset(dataset_dir, label_column)
    root = ds.root
    paths = list(dict.fromkeys(c.path for c in ds.captures))
    warnings: list[str] = []
    seen_hashes = trained_hashes(bundle.info)
    seen: set[str] = set()
    if seen_hashes is None:
        warnings.append(f"{model_uri}: the model does not record its training captures "
                        "(trained before flockwatch recorded them); leakage cannot be checked")
    else:
        seen = {str(p) for p in paths if file_hash(p) in seen_hashes}
        if len(seen) == len(paths):
            raise DatasetError(
                f"{root}: all {len(paths)} captures were used to train {model_uri}; hold "
                f"some out: flockwatch datasets split {root} -o DIR, train on DIR/train, "
                "evaluate on DIR/test")
        if seen:
            warnings.append(f"{root}: {len(seen)} of {len(paths)} captures were used to train "
                            "this model; reported apart")
    flows, problems = dataset_flows(ds, on_file=on_file, client=client)
    spec = bundle.classifier_window or bundle.window
    win = labelled_windows(ds, flows, spec, strict=False)
    clf = bundle.classifier
    three = hasattr(clf, "categories_")
    preds = device_predictions(clf, win, capture_evidence(flows) if three else None
                               ).with_columns(pl.col("capture").is_in(sorted(seen)).alias("seen"))
    known = list(clf.classes_)
    # The truth at each level: the labels' category and vendor, else the model's own for a
    # type it knows.
    categories = {**getattr(clf, "categories_", {}),
                  **{c.label: c.category for c in ds.captures if c.category}}
    vendors = {**getattr(clf, "vendors_", {}),
               **{c.label: c.vendor for c in ds.captures if c.vendor}}

    def metrics_of(p: pl.DataFrame) -> dict[str, Any]:
        if p.height == 0:  # e.g. held-out captures without flows
            return {"n": 0, "accuracy": float("nan"), "macro_f1": float("nan"),
                    "per_class": {}, "labels": [], "confusion_matrix": []}
        m = classification_metrics(p["label"].to_list(), p["device_type"].to_list(),
                                   known=known)
        if three:
            # model level: known types only; category and vendor: every device with a truth
            m.update(identity_metrics(p["label"].to_list(), p["device_type"].to_list(),
                                      p["candidates"].to_list(), p["category"].to_list(),
                                      p["vendor"].to_list(), categories, vendors))
            kn = p.filter(pl.col("label").is_in(known))
            if kn.height:
                k = identity_metrics(kn["label"].to_list(), kn["device_type"].to_list(),
                                     kn["candidates"].to_list(), kn["category"].to_list(),
                                     kn["vendor"].to_list(), categories, vendors)
                m.update(set_coverage=k["set_coverage"], mean_set_size=k["mean_set_size"],
                         right_or_set_of_2=k["right_or_set_of_2"])
            m["coverage_stated"] = clf.coverage
        return m

    held = preds.filter(~pl.col("seen"))
    out: dict[str, Any] = {
        "model": model_uri,
        "dataset": str(root),
        "reject_quantile": clf.reject_quantile,
        "captures": len(paths),
        "held_out_captures": len(paths) - len(seen),
        # held-out captures only: the figures to quote
        "metrics": metrics_of(held),
        "seen_in_training": ({"captures": len(seen), "metrics": metrics_of(
            preds.filter(pl.col("seen")))} if seen else None),
        "leakage_checked": seen_hashes is not None,
        "predictions": [
            {"path": os.path.relpath(r["capture"], root), "mac": r["device_id"], "true": r["label"],
             "predicted": r["device_type"], "confidence": round(r["type_confidence"], 4),
             "unknown": r["unknown"], "seen_in_training": r["seen"],
             **({"category": r["category"], "category_confidence": _round(
                 r["category_confidence"]), "vendor": r["vendor"],
                 "vendor_confidence": _round(r["vendor_confidence"]),
                 "candidates": json.loads(r["candidates"] or "[]")} if three else {})}
            for r in preds.iter_rows(named=True)
        ],
        "warnings": warnings,
        "problems": [str(p) for p in problems],
    }
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)

"""Classification metrics and figures (accuracy, macro F1, per-class, confusion matrix)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flockwatch.models.classifier import UNKNOWN


def classification_metrics(true: Sequence[str], pred: Sequence[str],
                           known: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics where a label unknown to the model is correct only when predicted unknown."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    known_set = set(known) if known is not None else None
    t = [x if known_set is None or x in known_set else UNKNOWN for x in true]
    p = list(pred)
    labels = sorted(set(t) | set(p))
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    true_labels = sorted(set(t))
    idx = [labels.index(x) for x in true_labels]
    cm = confusion_matrix(t, p, labels=labels)
    return {
        "n": len(t),
        "accuracy": float(np.mean(np.asarray(t) == np.asarray(p))) if t else 0.0,
        "macro_f1": float(np.mean(f1[idx])) if idx else 0.0,
        "per_class": {lab: {"precision": float(prec[i]), "recall": float(rec[i]),
                            "f1": float(f1[i]), "support": int(sup[i])}
                      for i, lab in enumerate(labels)},
        "labels": labels,
        "confusion_matrix": cm.tolist(),
    }


def identity_metrics(true: Sequence[str], pred: Sequence[str], candidates: Sequence[str],
                     category: Sequence[str | None], vendor: Sequence[str | None],
                     categories: dict[str, str | None], vendors: dict[str, str | None]
                     ) -> dict[str, float]:
    """The answers beside the model: category and vendor right (against the labels'
    ``categories`` and ``vendors`` of each true type; devices whose type has none are left
    out), prediction sets (coverage: the true type is in ``candidates``; mean size of the
    non-empty sets) and "right model, or a set of at most 2 holding it"."""
    import json

    sets = [json.loads(c) if c else [] for c in candidates]
    cat_pairs = [(categories.get(t), c) for t, c in zip(true, category, strict=True)
                 if categories.get(t)]
    ven_pairs = [(vendors.get(t), v) for t, v in zip(true, vendor, strict=True)
                 if vendors.get(t)]
    sizes = [len(s) for s in sets if s]
    n = len(true)
    return {
        "category_accuracy": (float(np.mean([a == b for a, b in cat_pairs]))
                              if cat_pairs else float("nan")),
        "vendor_accuracy": (float(np.mean([a == b for a, b in ven_pairs]))
                            if ven_pairs else float("nan")),
        "set_coverage": float(np.mean([t in s for t, s in zip(true, sets, strict=True)]))
        if n else float("nan"),
        "mean_set_size": float(np.mean(sizes)) if sizes else float("nan"),
        "right_or_set_of_2": float(np.mean([
            p == t or (t in s and len(s) <= 2)
            for t, p, s in zip(true, pred, sets, strict=True)])) if n else float("nan"),
    }


def confusion_figure(metrics: dict[str, Any], title: str = "confusion matrix") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = metrics["labels"]
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(5, 0.35 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"{title}\nmacro F1 {metrics['macro_f1']:.3f}, accuracy {metrics['accuracy']:.3f}")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig

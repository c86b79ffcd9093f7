"""Pictures of a scoring report: each device's anomaly score over time against its threshold."""

from __future__ import annotations

import os
from typing import Any

import polars as pl

from flockwatch.features.output import atomic_path

_KIND_LABELS = {"anomalous_window": "anomalous", "new_peer": "new peer",
                "new_device": "new device"}


def _alert_title(counts: dict[str, int]) -> str:
    """``5 alerts: 2 anomalous, 3 new peer, 0 new device``: every kind, so a panel's count is
    the device's whole count in the report."""
    total = sum(counts.values())
    return f"{total} alert{'s' if total != 1 else ''}: " + ", ".join(
        f"{counts.get(k, 0)} {label}" for k, label in _KIND_LABELS.items())


def _learning_spans(windows: pl.DataFrame) -> list[tuple[Any, Any]]:
    """Per source, from its first to its last window marked ``learning``."""
    if "learning" not in windows.columns:
        return []
    spans = windows.filter(pl.col("learning")).group_by("source").agg(
        pl.col("start").min(), pl.col("end").max()).sort("start")
    return [(r["start"], r["end"]) for r in spans.iter_rows(named=True)]


def timeline_figure(windows: pl.DataFrame, max_devices: int = 12, *,
                    alerts: list[dict[str, Any]] | None = None) -> Any:
    """One panel per device (those with the most alerts first, at most ``max_devices``): the
    anomaly score of each window on a log scale, the device's threshold dashed, alerting
    windows in red, the learning period shaded. ``windows`` is a report's scored windows
    (``ScoreReport.windows``) and ``alerts`` its alerts: each panel is titled with its
    device's alert count of every kind (without ``alerts``, anomalous windows outside the
    learning period are counted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = windows.filter(pl.col("anomaly_score").is_not_null())
    if scored.height == 0:
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no scored windows: the model has no baseline, or every device is new",
                ha="center", va="center")
        return fig
    if alerts is None:
        operational = pl.col("anomalous").fill_null(False)
        if "learning" in scored.columns:
            operational = operational & ~pl.col("learning")
        alerts = [{"device_id": d, "kind": "anomalous_window"}
                  for d in scored.filter(operational)["device_id"].to_list()]
    counts: dict[str, dict[str, int]] = {}
    for a in alerts:
        per = counts.setdefault(a["device_id"], {})
        per[a["kind"]] = per.get(a["kind"], 0) + 1
    order = scored.group_by("device_id").agg(
        (pl.col("anomaly_score") / pl.col("threshold")).max().alias("worst"),
        pl.col("device_type").drop_nulls().last().alias("type"),
    ).with_columns(
        pl.col("device_id").replace_strict({d: sum(c.values()) for d, c in counts.items()},
                                           default=0, return_dtype=pl.Int64).alias("alerts"),
    ).sort(["alerts", "worst", "device_id"], descending=[True, True, False])
    shown = order.head(max_devices)
    n = shown.height
    fig, axes = plt.subplots(n, 1, sharex=True, figsize=(11, 1.5 * n + 1.2), squeeze=False)
    # A log axis cannot show 0: such scores sit at the smallest positive one.
    positive = scored["anomaly_score"].filter(scored["anomaly_score"] > 0)
    floor = max(float(positive.min()) if positive.len() else 1e-6, 1e-6)  # type: ignore[arg-type]
    scored = scored.with_columns(pl.col("anomaly_score").clip(lower_bound=floor).alias("_y"))
    spans = _learning_spans(windows)
    for ax, dev in zip(axes[:, 0], shown.iter_rows(named=True), strict=True):
        for lo, hi in spans:
            ax.axvspan(lo, hi, color="0.88", zorder=0, lw=0)
        w = scored.filter(pl.col("device_id") == dev["device_id"]).sort("start")
        t = w["start"].to_list()
        ax.plot(t, w["_y"].to_list(), lw=0.9, color="tab:blue")
        ax.step(t, w["threshold"].to_list(), where="post", ls="--", lw=0.9, color="0.4")
        bad = w.filter(pl.col("anomalous").fill_null(False))
        learnt = pl.col("learning") if "learning" in w.columns else pl.lit(False)
        for part, face in ((bad.filter(~learnt), "tab:red"), (bad.filter(learnt), "none")):
            if part.height:  # hollow: anomalous in the learning period
                ax.scatter(part["start"].to_list(), part["_y"].to_list(), s=14, zorder=3,
                           edgecolors="tab:red", facecolors=face)
        ax.set_yscale("log")
        label = dev["device_id"] + (f"\n{dev['type']}" if dev["type"] else "")
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(_alert_title(counts.get(dev["device_id"], {})), loc="right", fontsize=7,
                     pad=2)
    axes[-1, 0].set_xlabel("window start (UTC)", fontsize=8)
    more = order.height - n
    shown_ids = set(shown["device_id"].to_list())
    elsewhere = sum(sum(c.values()) for d, c in counts.items() if d not in shown_ids)
    notes = []
    if more:
        notes.append(f"{more} quieter devices not shown")
    if elsewhere:
        notes.append(f"{elsewhere} alerts on devices not shown")
    learning = "; grey: the model's learning period (hollow: anomalous there)" if spans else ""
    fig.suptitle("Anomaly score per window (log scale); dashed: the device's threshold; "
                 "red: anomalous windows" + learning
                 + ("\n" + "; ".join(notes) if notes else ""), fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def write_png(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure as a PNG, atomically, and release it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)


def write_timeline(windows: pl.DataFrame, path: str | os.PathLike[str],
                   max_devices: int = 12, *, alerts: list[dict[str, Any]] | None = None
                   ) -> None:
    """Write ``timeline_figure`` as a PNG, atomically."""
    write_png(timeline_figure(windows, max_devices, alerts=alerts), path)

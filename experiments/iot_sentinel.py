"""IoT Sentinel device-type identification, evaluated by capture (session) separation.

Reproduces the classifier figures of docs/results.md and logs them to MLflow. One classifier
per fold is trained the way `flockwatch train classifier` trains (whole 300 s windows plus the
first 10, 30 and 60 s of each training capture) and evaluated on captures it never saw:
- session-separated k-fold CV (whole captures held out per type), repeated with different
  fold assignments (mean and spread): macro F1, accuracy, per-class F1, the same with the
  same-vendor families merged, how many known captures the open-set rule rejects, and the
  closed-set macro F1 (the most probable type, no "unknown" answer);
- time to identify: macro F1 of the same models on only the first 10, 30, 60 s of each
  held-out capture;
- unit-separated: the types captured from two units, each unit held out whole (a new unit
  of a known type, which capture-separated folds never show);
- open set: each type left out of training in turn: unknown rate, known-rejection rate, and
  how often a left-out type is called unknown or its same-vendor sibling;
- the open-set trade-off: the same fold and left-out models re-decided under each
  ``reject_quantile`` (``--reject-quantiles``), since catching never-seen types costs known
  captures wrongly rejected, which the macro F1 counts as errors.

Usage:
    .venv/bin/python experiments/iot_sentinel.py            # full (all 27 types, 3 repeats)
    .venv/bin/python experiments/iot_sentinel.py --quick    # CI: 6 types, 2 folds, 1 repeat
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

from flockwatch.datasets.labelled import (
    dataset_flows,
    early_windows,
    labelled_windows,
    load_dataset,
)
from flockwatch.features.windows import WindowSpec
from flockwatch.training.classifier import cross_validate, open_set
from flockwatch.training.metrics import classification_metrics, confusion_figure

# Same-vendor families known to be nearly indistinguishable in published work (and two
# "types" that are a different setup procedure on the same hub).
FAMILIES = {
    "D-LinkDoorSensor": "D-LinkHub+sensors", "D-LinkHomeHub": "D-LinkHub+sensors",
    "D-LinkSensor": "D-LinkHub+sensors", "D-LinkSiren": "D-LinkHub+sensors",
    "D-LinkWaterSensor": "D-LinkHub+sensors", "D-LinkSwitch": "D-LinkHub+sensors",
    "EdimaxPlug1101W": "EdimaxPlug", "EdimaxPlug2101W": "EdimaxPlug",
    "TP-LinkPlugHS100": "TP-LinkPlug", "TP-LinkPlugHS110": "TP-LinkPlug",
    "SmarterCoffee": "Smarter", "iKettle2": "Smarter",
    "HueBridge": "Hue", "HueSwitch": "Hue",
}
EARLY_SECONDS = (10, 30, 60)
QUICK_TYPES = ["Aria", "HueBridge", "WeMoLink", "Withings", "Lightify", "EdnetCam"]


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": round(float(a.mean()), 4), "sd": round(float(a.std()), 4),
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}


def _unit_separated(win: pl.DataFrame, early: dict[str, pl.DataFrame], unit_of: dict[str, str],
                    folds: int, capture_separated: dict[str, list[float]]) -> dict[str, object]:
    """Types captured from two units, each unit's captures held out together: the model must
    name a unit it never saw (capture-separated folds cannot show this, since every other
    capture of the unit trains the model). Other types stay split by capture."""
    captures = list(win.select("capture", "label").unique().iter_rows())
    units: dict[str, set[str]] = defaultdict(set)
    for cap, lab in captures:
        units[lab].add(unit_of[cap])
    multi = sorted(lab for lab, u in units.items() if len(u) > 1)
    if not multi:
        return {"types": []}
    group = {cap: unit_of[cap] if lab in multi else cap for cap, lab in captures}

    def regroup(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(pl.col("capture").replace_strict(group).alias("group"))

    cv, p = cross_validate(regroup(win), n_folds=folds, extra_train={
        k: regroup(v) for k, v in early.items()})
    closed = classification_metrics(p["label"].to_list(), p["closest_type"].to_list())
    return {
        "types": multi,
        "per_class_f1": {lab: round(cv["per_class"][lab]["f1"], 3) for lab in multi},
        "per_class_f1_closed_set": {lab: round(closed["per_class"][lab]["f1"], 3)
                                    for lab in multi},
        "capture_separated_per_class_f1": {lab: round(float(np.mean(capture_separated[lab])), 3)
                                           for lab in multi if capture_separated.get(lab)},
    }


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="fold assignments (seeds)")
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--quick", action="store_true", help="few types, folds, repeats (CI)")
    ap.add_argument("--reject-quantiles", default="0,0.02,0.04,0.08,0.15,0.3",
                    help="open-set trade-off points to report (comma-separated)")
    args = ap.parse_args()
    sweep_q = [float(x) for x in args.reject_quantiles.split(",") if x.strip()]
    root = Path(args.data) / "iot-sentinel"
    if not (root / "labels.csv").exists():
        print(f"skipped: no IoT Sentinel captures at {root} (set FLOCKWATCH_DATA)")
        return 0
    folds = 2 if args.quick else args.folds
    repeats = 1 if args.quick else args.repeats
    ds = load_dataset(root, "device_type", "device_instance")
    ds.captures = [c for c in ds.captures if not args.quick or c.label in QUICK_TYPES]
    unit_of = {str(c.path): c.group for c in ds.captures}  # device_instance: the unit
    # Group by capture (session); device_instance only names units.
    ds.captures = [type(c)(c.path, c.label, c.mac, str(c.path)) for c in ds.captures]
    t0 = time.monotonic()
    flows, problems = dataset_flows(ds)
    t_extract = time.monotonic() - t0
    spec = WindowSpec(args.window)
    win = labelled_windows(ds, flows, spec, strict=False)
    early = early_windows(ds, flows, spec, EARLY_SECONDS)
    results: dict[str, object] = {"captures": len(ds.captures),
                                  "types": len(ds.label_counts()), "folds": folds,
                                  "repeats": repeats, "extract_seconds": round(t_extract, 1),
                                  "problems": [str(p) for p in problems]}
    t1 = time.monotonic()
    runs: dict[str, list[float]] = defaultdict(list)
    per_class: dict[str, list[float]] = defaultdict(list)
    first_cv = None
    sweep_runs: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for seed in range(repeats):
        cv, main_p = cross_validate(win, n_folds=folds, seed=seed, extra_train=early,
                                    evaluate_on=early, reject_quantiles=sweep_q, merge=FAMILIES)
        for point in cv.pop("sweep", []):
            for k, v in point.items():
                sweep_runs[point["reject_quantile"]][k].append(v)
        runs["macro_f1"].append(cv["macro_f1"])
        runs["accuracy"].append(cv["accuracy"])
        runs["macro_f1_families"].append(cv["macro_f1_merged"])
        runs["known_rejected"].append(cv["known_rejected"])
        # Closed set, as published IoT Sentinel/IoTDevID figures are: no "unknown" answer.
        runs["macro_f1_closed_set"].append(classification_metrics(
            main_p["label"].to_list(), main_p["closest_type"].to_list())["macro_f1"])
        for name, m in cv["sets"].items():
            runs[f"macro_f1_{name}"].append(m["macro_f1"])
        for lab, m in cv["per_class"].items():
            if lab != "unknown":
                per_class[lab].append(m["f1"])
        first_cv = first_cv or cv
    results["train_eval_seconds"] = round(time.monotonic() - t1, 1)
    results["unit_separated"] = _unit_separated(win, early, unit_of, folds, per_class)
    results["session_separated"] = {k: _summary(v) for k, v in runs.items()}
    results["per_class_f1_mean"] = {k: round(float(np.mean(v)), 3) for k, v in per_class.items()}
    osr = open_set(win, n_folds=folds, extra_train=early, reject_quantiles=sweep_q)
    sibling = {lab: [x for x, f in FAMILIES.items() if f == FAMILIES.get(lab) and x != lab]
               for lab in osr["predicted_as"]}
    fam_ok = {lab: sum(n for pred, n in got.items() if pred == "unknown" or pred in sibling[lab])
              / max(1, sum(got.values())) for lab, got in osr["predicted_as"].items()}
    osr["unknown_or_sibling_rate"] = float(np.mean(list(fam_ok.values()))) if fam_ok else None
    # One row per trade-off point: CV figures (mean over repeats) and the open-set figures.
    open_pts = {p["reject_quantile"]: p for p in osr.pop("sweep")}
    results["reject_quantile_tradeoff"] = [
        {"reject_quantile": q,
         **{f"cv_{k}": round(float(np.mean(v)), 4) for k, v in sweep_runs[q].items()
            if k != "reject_quantile"},
         "open_set_unknown_rate": round(open_pts[q]["unknown_rate"], 4),
         "open_set_known_rejected": round(open_pts[q]["known_rejected_rate"], 4)}
        for q in sweep_q]
    results["open_set"] = osr
    # Training time on the cached flows, all captures (what `train classifier` pays).
    from flockwatch.models.classifier import DeviceClassifier

    t2 = time.monotonic()
    flows2, _ = dataset_flows(ds)
    all_win = pl.concat([labelled_windows(ds, flows2, spec, strict=False),
                         *early_windows(ds, flows2, spec, EARLY_SECONDS).values()],
                        how="vertical_relaxed")
    DeviceClassifier().fit(all_win, all_win["label"], all_win["group"])
    results["train_seconds_cached"] = round(time.monotonic() - t2, 1)

    summary = results["session_separated"]
    assert first_cv is not None, "--repeats is at least 1"
    report("iot_sentinel" + ("-quick" if args.quick else ""), results, args.output,
           params={"folds": folds, "repeats": repeats, "window_s": args.window,
                   "quick": args.quick, "captures": len(ds.captures)},
           metrics={
               **{k: v["mean"] for k, v in summary.items()},  # type: ignore[attr-defined]
               "open_set_unknown_rate": osr["unknown_rate"],
               "open_set_known_rejected": osr["known_rejected_rate"],
               "open_set_unknown_or_sibling": osr["unknown_or_sibling_rate"],
               "extract_seconds": t_extract,
           },
           figures={"confusion_matrix.png": confusion_figure(
               first_cv, "IoT Sentinel, session-separated")})
    return 0


if __name__ == "__main__":
    sys.exit(main())

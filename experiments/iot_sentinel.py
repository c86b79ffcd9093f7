"""IoT Sentinel device-type identification, evaluated by capture (session) separation.

Reproduces the README's classifier figures and logs them to MLflow:
- session-separated k-fold CV (whole captures held out per type): macro F1, accuracy,
  per-class F1, and the same with the same-vendor families merged;
- time to identify: macro F1 when only the first 10, 30, 60 s of each capture are seen;
- open set: each type left out of training in turn: unknown rate, known-rejection rate.

Usage:
    .venv/bin/python experiments/iot_sentinel.py            # full (all 27 types)
    .venv/bin/python experiments/iot_sentinel.py --quick    # CI: 6 types, 2 folds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import default_data, report  # noqa: E402
from flockwatch.datasets.labelled import dataset_flows, labelled_windows, load_dataset
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
QUICK_TYPES = ["Aria", "HueBridge", "WeMoLink", "Withings", "Lightify", "EdnetGateway"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=default_data())
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--quick", action="store_true", help="few types and folds (CI)")
    ap.add_argument("--output", help="write the results as JSON here")
    args = ap.parse_args()
    root = Path(args.data) / "iot-sentinel"
    if not (root / "labels.csv").exists():
        print(f"skipped: no IoT Sentinel captures at {root} (set FLOCKWATCH_DATA)")
        return 0
    folds = 2 if args.quick else args.folds
    ds = load_dataset(root, "device_type", "device_instance")
    ds.captures = [c for c in ds.captures if not args.quick or c.label in QUICK_TYPES]
    # Group by capture (session); device_instance only names units.
    ds.captures = [type(c)(c.path, c.label, c.mac, str(c.path)) for c in ds.captures]
    t0 = time.monotonic()
    flows, problems = dataset_flows(ds)
    t_extract = time.monotonic() - t0
    spec = WindowSpec(args.window)
    win = labelled_windows(ds, flows, spec, strict=False)
    results: dict[str, object] = {"captures": len(ds.captures),
                                  "types": len(ds.label_counts()), "folds": folds,
                                  "extract_seconds": round(t_extract, 1),
                                  "problems": [str(p) for p in problems]}
    t1 = time.monotonic()
    cv, preds = cross_validate(win, n_folds=folds)
    results["train_eval_seconds"] = round(time.monotonic() - t1, 1)
    merged = classification_metrics(preds["label"].replace(FAMILIES).to_list(),
                                    preds["device_type"].replace(FAMILIES).to_list())
    results["session_separated"] = {k: cv[k] for k in ("n", "accuracy", "macro_f1")}
    results["per_class_f1"] = {k: round(v["f1"], 3) for k, v in cv["per_class"].items()}
    results["families_merged"] = {k: merged[k] for k in ("n", "accuracy", "macro_f1")}
    tti = {}
    for secs in (10, 30, 60):
        w = labelled_windows(ds, flows, spec, max_seconds=secs, strict=False)
        m, _ = cross_validate(w, n_folds=folds)
        tti[f"{secs}s"] = {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}
    results["time_to_identify"] = tti
    results["open_set"] = open_set(win, n_folds=folds)
    # Training time on the cached flows, all captures (what `train classifier` pays).
    from flockwatch.models.classifier import DeviceClassifier

    t2 = time.monotonic()
    flows2, _ = dataset_flows(ds)
    win2 = labelled_windows(ds, flows2, spec, strict=False)
    DeviceClassifier().fit(win2, win2["label"], win2["group"])
    results["train_seconds_cached"] = round(time.monotonic() - t2, 1)

    report("iot_sentinel" + ("-quick" if args.quick else ""), results, args.output,
           params={"folds": folds, "window_s": args.window, "quick": args.quick,
                   "captures": len(ds.captures)},
           metrics={
               "macro_f1": cv["macro_f1"], "accuracy": cv["accuracy"],
               "macro_f1_families": merged["macro_f1"],
               **{f"macro_f1_first_{k}": v["macro_f1"] for k, v in tti.items()},
               "open_set_unknown_rate": results["open_set"]["unknown_rate"],  # type: ignore[index]
               "open_set_known_rejected": results["open_set"]["known_rejected_rate"],  # type: ignore[index]
               "extract_seconds": t_extract,
           },
           figures={"confusion_matrix.png": confusion_figure(
               cv, "IoT Sentinel, session-separated")})
    return 0


if __name__ == "__main__":
    sys.exit(main())

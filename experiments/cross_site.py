"""Cross-site device identification (DeviceIdentifier: behaviour + product evidence), measured
on proxies of a new site that the shared captures allow.

The other-lab captures on which the issue measured "28 of 36 known products named wrong at
another site" are not in the shared data, so each proxy below moves one thing a new site
moves, and trains only on the captures it does not test:
1. same_lab_cv: capture-grouped k-fold CV (the baseline: same lab, same units, same people);
2. person: train on person A's setups, test person C's, and the reverse (types both have);
3. unit: types captured from two units, one unit trained (with every other type), the other
   tested, both ways (a new unit of a known product);
4. setup_to_steady: train on the first 30 s of each training capture (windows and evidence of
   that slice only), test on the part after 30 s of held-out captures (a device met after
   its setup: no first-boot DHCP or lookups);
5. never_seen: each type left out of training in turn: model-level unknown, category and
   vendor right, separately for types with a same-vendor twin in training (expected to come
   back as the twin) and the rest;
6. week_long: train on all of IoT Sentinel, score the week-long devices of long-term-iot
   (products and a category never seen): what comes back per device;
7. site_shift sweep on splits 1 and 2 (the share of behaviour not trusted at a new site).

Held-out devices get evidence of the same slice of their capture as their windows: whole
capture for whole-capture tests, the part after 30 s for split 4 (never the whole capture for
a sliced test, which would leak the setup's DHCP and lookups).

Usage:
    .venv/bin/python experiments/cross_site.py            # full (27 types, 4 folds)
    .venv/bin/python experiments/cross_site.py --quick    # CI: 6 types, 2 folds, 3 left out
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser  # noqa: E402

from flockwatch.datasets.labelled import (
    LabelledDataset,
    capture_evidence,
    dataset_flows,
    early_windows,
    labelled_evidence,
    labelled_windows,
    late_windows,
    load_dataset,
)
from flockwatch.features.windows import WindowSpec

EXPERIMENT = "flockwatch-cross-site"
EARLY_SECONDS = (10, 30, 60)
QUICK_TYPES = ["Aria", "EdnetCam", "HueBridge", "TP-LinkPlugHS100", "TP-LinkPlugHS110",
               "Withings"]
QUICK_LEFT_OUT = ["EdnetCam", "TP-LinkPlugHS110", "Withings"]
SITE_SHIFTS = (0.0, 0.5, 0.8, 1.0)
#: the identifier's default: splits 1 and 2 are this point of the sweep (their models reused)
DEFAULT_SHIFT = 0.8
# Products with a same-vendor twin (same cloud, DHCP list and OUI): left out, they are
# expected to come back as the twin rather than unknown. Two "types" are another setup of the
# same unit (the data's README: D-LinkDoorSensor is set up on the D-LinkHomeHub, HueSwitch on
# the HueBridge, with the hub's MAC): left out, the hub is still there.
TWIN_FAMILIES = [
    {"D-LinkDoorSensor", "D-LinkSensor", "D-LinkSiren", "D-LinkWaterSensor", "D-LinkSwitch",
     "D-LinkHomeHub"},
    {"HueBridge", "HueSwitch"},
    {"EdimaxPlug1101W", "EdimaxPlug2101W"},
    {"TP-LinkPlugHS100", "TP-LinkPlugHS110"},
    {"SmarterCoffee", "iKettle2"},
    {"WeMoSwitch", "WeMoInsightSwitch"},
]
TARGETS = {
    "known_other_site_in_set_of_2": ">= 0.80 (right model or a set of <= 2 containing it)",
    "never_seen_unknown_rate": ">= 0.90 (unknown at model level)",
    "never_seen_category_right": ">= 0.70",
    "same_lab_macro_f1": ">= 0.97",
    "coverage": "within 0.02 of 0.95",
    "mean_set_size": "<= 1.1",
}
BY = ("capture", "device_id")


def _twins(label: str) -> set[str]:
    for fam in TWIN_FAMILIES:
        if label in fam:
            return fam - {label}
    return set()


class Data:
    """Windows, early windows, evidence and labels of one labelled set, computed once; every
    split takes subsets by capture group."""

    def __init__(self, ds: LabelledDataset, flows: dict[Path, pl.DataFrame], spec: WindowSpec):
        self.ds, self.flows, self.spec = ds, flows, spec
        self.win = labelled_windows(ds, flows, spec, strict=False)
        # training rows beside whole captures, as `train classifier` has them: the first
        # seconds and the steady state after the first minute
        self.early = {**early_windows(ds, flows, spec, EARLY_SECONDS),
                      **late_windows(ds, flows, spec, 60.0)}
        self.evidence = labelled_evidence(ds, flows)
        self.test_evidence = capture_evidence(flows)
        self.label = {c.group: c.label for c in ds.captures}
        self.category = {c.label: c.category for c in ds.captures}
        self.vendor = {c.label: c.vendor for c in ds.captures}
        self.groups = sorted(set(self.win["group"].unique().to_list()))

    def train_rows(self, groups: Iterable[str]) -> pl.DataFrame:
        keep = list(groups)
        parts = [self.win.filter(pl.col("group").is_in(keep))]
        parts += [e.filter(pl.col("group").is_in(keep)).select(self.win.columns)
                  for e in self.early.values()]
        return pl.concat(parts, how="vertical_relaxed")


def _fit(rows: pl.DataFrame, evidence: dict[tuple[str, str], list[list[str]]], data: Data,
         **params: Any) -> Any:
    from flockwatch.models.identity import DeviceIdentifier

    groups = set(rows["group"].unique().to_list())
    ev = {k: v for k, v in evidence.items() if k[0] in groups}
    return DeviceIdentifier(**params).fit(rows, rows["label"], rows["group"], ev,
                                          categories=data.category, vendors=data.vendor)


def _predict(model: Any, test: pl.DataFrame, evidence: pl.DataFrame) -> pl.DataFrame:
    """One row per held-out device: the identifier's answer and its true ``label``."""
    pred = model.predict_devices(test, by=BY, evidence=evidence)
    truth = test.group_by(*BY).agg(pl.col("label").first())
    return truth.join(pred, on=list(BY), how="inner")


def vendor_match(truth: str | None, given: str | None) -> bool:
    """The labels' maker and the answer name the same company: equal ignoring case, or one
    starts the other ("D-Link" and an OUI table's "d-link international"). A module maker's
    OUI ("espressif inc." for a lock hub) stays wrong."""
    if not truth or not given:
        return False
    a, b = truth.lower().strip(), given.lower().strip()
    return a == b or a.startswith(b) or b.startswith(a)


def _cands(p: pl.DataFrame) -> list[list[str]]:
    return [json.loads(c) if c else [] for c in p["candidates"].to_list()]


def scores(p: pl.DataFrame, data: Data) -> dict[str, Any]:
    """The split's figures; "unknown" counts as wrong for a known type."""
    from flockwatch.models.identity import mean_set_size
    from flockwatch.training.metrics import classification_metrics

    if p.height == 0:
        return {"n": 0}
    y, d = p["label"].to_list(), p["device_type"].to_list()
    cands = _cands(p)
    with warnings.catch_warnings():  # one class held out: sklearn warns about the matrix
        warnings.simplefilter("ignore", UserWarning)
        m = classification_metrics(y, d)
    size = mean_set_size(p["candidates"].to_list())
    return {
        "n": p.height,
        "accuracy": round(m["accuracy"], 4),
        "macro_f1": round(m["macro_f1"], 4),
        "known_rejected": round(float(p["unknown"].mean()), 4),  # type: ignore[arg-type]
        "right_or_set_of_2": round(float(np.mean(
            [t == a or (t in c and len(c) <= 2) for t, a, c in zip(y, d, cands, strict=True)])),
            4),
        "coverage": round(float(np.mean([t in c for t, c in zip(y, cands, strict=True)])), 4),
        # Rejected devices get no set; the conformal level is calibrated over all of them.
        "coverage_of_accepted": round(float(np.mean(
            [t in c for t, c in zip(y, cands, strict=True) if c])), 4) if any(cands) else None,
        "mean_set_size": None if math.isnan(size) else round(size, 4),
        "category_accuracy": round(float(np.mean(
            [data.category[t] == c for t, c in zip(y, p["category"].to_list(), strict=True)])),
            4),
        "vendor_accuracy": round(float(np.mean(
            [vendor_match(data.vendor[t], v)
             for t, v in zip(y, p["vendor"].to_list(), strict=True)])), 4),
        "per_class_f1": {lab: round(v["f1"], 3) for lab, v in m["per_class"].items()
                         if lab in set(y)},
    }


def _folds(data: Data, groups: Sequence[str], n_folds: int) -> list[tuple[list[str], list[str]]]:
    from flockwatch.models.base import group_folds

    f = group_folds([data.label[g] for g in groups], list(groups), n_folds, 0)
    return [([g for g, k in zip(groups, f, strict=True) if k != i],
             [g for g, k in zip(groups, f, strict=True) if k == i]) for i in range(n_folds)]


def _run_folds(data: Data, folds: list[tuple[list[str], list[str]]], **params: Any
               ) -> pl.DataFrame:
    preds = []
    for train, test in folds:
        model = _fit(data.train_rows(train), data.evidence, data, **params)
        preds.append(_predict(model, data.win.filter(pl.col("group").is_in(test)),
                              data.test_evidence))
    return pl.concat(preds, how="vertical_relaxed")


def person_splits(data: Data, person: dict[str, str]) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for a, b in (("A", "C"), ("C", "A")):
        train = [g for g in data.groups if person.get(g) == a]
        known = {data.label[g] for g in train}
        test = [g for g in data.groups if person.get(g) == b and data.label[g] in known]
        out.append((f"{a}_to_{b}", train, test))
    return out


def unit_splits(data: Data, unit: dict[str, str]) -> tuple[list[str], list[tuple[str, list[str],
                                                                               list[str]]]]:
    units: dict[str, set[str]] = {}
    for g in data.groups:
        units.setdefault(data.label[g], set()).add(unit[g])
    multi = sorted(t for t, u in units.items() if len(u) > 1)
    out = []
    for side in (0, 1):
        held = {sorted(units[t])[side] for t in multi}
        test = [g for g in data.groups if data.label[g] in multi and unit[g] in held]
        out.append((f"unit_{side + 1}_held_out", [g for g in data.groups if g not in test],
                    test))
    return multi, out


def setup_to_steady(data: Data, n_folds: int, cut_s: float = 30.0) -> pl.DataFrame:
    """Trained on the first ``cut_s`` of each training capture, tested on the part after it of
    held-out captures (only devices with windows there)."""
    ds, spec = data.ds, data.spec
    first = labelled_windows(ds, data.flows, spec, max_seconds=cut_s, strict=False)
    first10 = labelled_windows(ds, data.flows, spec, max_seconds=10, strict=False)
    ev_first = labelled_evidence(ds, data.flows, {"first": (None, cut_s)})
    late_flows = {}
    for p, df in data.flows.items():
        if df is not None and df.height:
            t0 = df["first_seen"].min()
            late_flows[p] = df.filter(pl.col("first_seen") >= pl.lit(t0)
                                      + pl.duration(seconds=cut_s))
    late = labelled_windows(ds, late_flows, spec, strict=False)
    ev_late = capture_evidence(data.flows, cut_s, None)
    preds = []
    for train, test in _folds(data, data.groups, n_folds):
        rows = pl.concat([w.filter(pl.col("group").is_in(train)).select(data.win.columns)
                          for w in (first, first10)], how="vertical_relaxed")
        model = _fit(rows, ev_first, data)
        held = late.filter(pl.col("group").is_in(test))
        if held.height:
            preds.append(_predict(model, held, ev_late))
    return pl.concat(preds, how="vertical_relaxed")


def never_seen(data: Data, left_out: Sequence[str]) -> dict[str, Any]:
    per_type: dict[str, Any] = {}
    rows = []
    for t in left_out:
        train = [g for g in data.groups if data.label[g] != t]
        test = [g for g in data.groups if data.label[g] == t]
        model = _fit(data.train_rows(train), data.evidence, data)
        p = _predict(model, data.win.filter(pl.col("group").is_in(test)), data.test_evidence)
        twins = _twins(t)
        came = Counter(p["device_type"].to_list())
        r = {
            "type": t, "twin_in_training": bool(twins), "n": p.height,
            "unknown": float(p["unknown"].mean()),  # type: ignore[arg-type]
            "category_right": float(np.mean([c == data.category[t]
                                             for c in p["category"].to_list()])),
            "vendor_right": float(np.mean([vendor_match(data.vendor[t], v)
                                           for v in p["vendor"].to_list()])),
            "unknown_or_twin": float(np.mean([d == "unknown" or d in twins
                                              for d in p["device_type"].to_list()])),
        }
        rows.append(r)
        per_type[t] = {**{k: (round(v, 3) if isinstance(v, float) else v)
                          for k, v in r.items() if k != "type"},
                       "came_back_as": dict(came.most_common(3)),
                       "category_given": dict(Counter(p["category"].to_list()).most_common(2))}

    def group(sel: list[dict[str, Any]]) -> dict[str, Any]:
        if not sel:
            return {"types": 0}
        n = sum(r["n"] for r in sel)
        # Pooled over devices (captures) and also averaged over types.
        return {"types": len(sel), "n": n,
                **{k: round(sum(r[k] * r["n"] for r in sel) / max(1, n), 4)
                   for k in ("unknown", "category_right", "vendor_right", "unknown_or_twin")},
                "unknown_type_mean": round(float(np.mean([r["unknown"] for r in sel])), 4)}

    return {"left_out": list(left_out), "all": group(rows),
            "with_twin": group([r for r in rows if r["twin_in_training"]]),
            "without_twin": group([r for r in rows if not r["twin_in_training"]]),
            "per_type": per_type}


def week_long(model: Any, root: Path, spec: WindowSpec, hours: float | None
              ) -> dict[str, Any]:
    """Each week-long device (a product and, for the lock hubs, a category never seen),
    scored on its first ``hours`` (None: all of it): what the identifier answers."""
    ds = load_dataset(root, "device_type")
    flows, problems = dataset_flows(ds)
    capped = {}
    for p, df in flows.items():
        if df is not None and df.height:
            t0 = df["first_seen"].min()
            capped[p] = df if hours is None else df.filter(
                pl.col("first_seen") < pl.lit(t0) + pl.duration(seconds=hours * 3600))
    win = labelled_windows(ds, capped, spec, strict=False)
    ev = capture_evidence(capped)
    pred = model.predict_devices(win, by=BY, evidence=ev)
    known_cats = set(model.category_values_)
    out: dict[str, Any] = {"hours": hours, "problems": [str(p) for p in problems],
                           "devices": {}}
    for c in ds.captures:
        row = pred.filter((pl.col("capture") == str(c.path)) & (pl.col("device_id") == c.mac))
        name = c.path.stem
        if row.height == 0:
            out["devices"][name] = {"label": c.label, "windows": 0}
            continue
        r = row.row(0, named=True)
        out["devices"][name] = {
            "label": c.label, "true_category": c.category,
            "category_known_in_training": c.category in known_cats,
            "windows": int(win.filter(pl.col("capture") == str(c.path)).height),
            "unknown": bool(r["unknown"]), "device_type": r["device_type"],
            "closest_type": r["closest_type"], "candidates": json.loads(r["candidates"] or "[]"),
            "category": r["category"],
            "category_confidence": _r(r["category_confidence"]),
            "category_right": r["category"] == c.category,
            "vendor": r["vendor"], "vendor_confidence": _r(r["vendor_confidence"]),
            "evidence_similarity": _r(r["evidence_similarity"]),
            "evidence": ev.filter((pl.col("capture") == str(c.path))
                                  & (pl.col("device_id") == c.mac))["evidence"].to_list()[:1],
        }
    devs = [d for d in out["devices"].values() if d.get("windows")]
    out["unknown_rate"] = round(float(np.mean([d["unknown"] for d in devs])), 4) if devs else None
    out["category_right"] = (round(float(np.mean([d["category_right"] for d in devs])), 4)
                             if devs else None)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _labels_table(root: Path) -> dict[str, dict[str, str]]:
    with (root / "labels.csv").open(newline="", encoding="utf-8") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def _log(name: str, results: dict[str, Any], params: dict[str, Any],
         metrics: dict[str, Any]) -> None:
    import mlflow

    from flockwatch.training.tracking import start_run

    with start_run(EXPERIMENT, None, name):
        mlflow.log_params(params)
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                mlflow.log_metric(k, float(v))
        mlflow.log_dict(results, "results.json")


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--window", type=float, default=300.0)
    ap.add_argument("--hours", type=float, default=None,
                    help="score the week-long captures' first hours only (default: the "
                         "whole week, --quick 3)")
    ap.add_argument("--quick", action="store_true",
                    help="6 types, 2 folds, 3 left-out types, 3 h of week-long traffic (CI)")
    args = ap.parse_args()
    root = Path(args.data) / "iot-sentinel"
    lt_root = Path(args.data) / "long-term-iot"
    if not (root / "labels.csv").exists():
        print(f"skipped: no IoT Sentinel captures at {root} (set FLOCKWATCH_DATA)")
        return 0
    folds = 2 if args.quick else args.folds
    hours = args.hours or (3.0 if args.quick else None)
    t_start = time.monotonic()
    ds = load_dataset(root, "device_type")  # grouped by capture
    if args.quick:
        ds.captures = [c for c in ds.captures if c.label in QUICK_TYPES]
    table = _labels_table(root)
    person = {c.group: table[c.group]["person"] for c in ds.captures}
    unit = {c.group: table[c.group]["device_instance"] for c in ds.captures}
    flows, problems = dataset_flows(ds)
    spec = WindowSpec(args.window)
    data = Data(ds, flows, spec)
    t_prep = time.monotonic() - t_start
    timing: dict[str, float] = {"prepare": round(t_prep, 1)}
    results: dict[str, Any] = {
        "quick": args.quick, "captures": len(ds.captures), "types": len(ds.label_counts()),
        "folds": folds, "window_s": args.window, "targets": TARGETS,
        "problems": [str(p) for p in problems], "splits": {}}
    splits: dict[str, Any] = results["splits"]
    sweep_preds: dict[str, dict[float, pl.DataFrame]] = {"same_lab_cv": {}, "person": {}}

    def clock(name: str, t0: float) -> None:
        timing[name] = round(time.monotonic() - t0, 1)
        print(f"{name}: {timing[name]} s", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    cv_folds = _folds(data, data.groups, folds)
    p = _run_folds(data, cv_folds)
    sweep_preds["same_lab_cv"][DEFAULT_SHIFT] = p
    splits["same_lab_cv"] = scores(p, data)
    clock("same_lab_cv", t0)

    t0 = time.monotonic()
    ps = person_splits(data, person)
    parts = {name: _run_folds(data, [(tr, te)]) for name, tr, te in ps}
    p = pl.concat(list(parts.values()), how="vertical_relaxed")
    sweep_preds["person"][DEFAULT_SHIFT] = p
    splits["person"] = {**scores(p, data), "directions": {k: scores(v, data)
                                                          for k, v in parts.items()}}
    clock("person", t0)

    t0 = time.monotonic()
    multi, us = unit_splits(data, unit)
    parts = {name: _run_folds(data, [(tr, te)]) for name, tr, te in us}
    splits["unit"] = {"types": multi,
                      **scores(pl.concat(list(parts.values()), how="vertical_relaxed"), data),
                      "sides": {k: scores(v, data) for k, v in parts.items()}}
    clock("unit", t0)

    t0 = time.monotonic()
    splits["setup_to_steady"] = scores(setup_to_steady(data, folds), data)
    clock("setup_to_steady", t0)

    t0 = time.monotonic()
    types = sorted(set(data.label.values()))
    splits["never_seen"] = never_seen(data, QUICK_LEFT_OUT if args.quick else types)
    clock("never_seen", t0)

    t0 = time.monotonic()
    if (lt_root / "labels.csv").exists():
        model = _fit(data.train_rows(data.groups), data.evidence, data)
        splits["week_long"] = week_long(model, lt_root, spec, hours)
    else:
        splits["week_long"] = {"skipped": f"no week-long captures at {lt_root}"}
    clock("week_long", t0)

    t0 = time.monotonic()
    from flockwatch.models.identity import DeviceIdentifier

    assert DeviceIdentifier().site_shift == DEFAULT_SHIFT, "DEFAULT_SHIFT is the default"
    sweep = []
    for shift in SITE_SHIFTS:
        point: dict[str, Any] = {"site_shift": shift}
        makers: tuple[tuple[str, Callable[[], list[tuple[list[str], list[str]]]]], ...] = (
            ("same_lab_cv", lambda: cv_folds),
            ("person", lambda: [(tr, te) for _, tr, te in ps]))
        for name, make in makers:
            if shift not in sweep_preds[name]:
                sweep_preds[name][shift] = _run_folds(data, make(), site_shift=shift)
            s = scores(sweep_preds[name][shift], data)
            point[name] = {k: v for k, v in s.items() if k != "per_class_f1"}
        sweep.append(point)
    results["site_shift_sweep"] = sweep
    clock("site_shift_sweep", t0)
    timing["total"] = round(time.monotonic() - t_start, 1)
    results["seconds"] = timing

    ns = splits["never_seen"]["all"]
    cross = [splits[k]["right_or_set_of_2"] for k in ("person", "unit", "setup_to_steady")]
    results["against_targets"] = {
        "same_lab_macro_f1": splits["same_lab_cv"]["macro_f1"],
        "known_other_site_in_set_of_2_min_over_proxies": min(cross),
        "never_seen_unknown_rate": ns.get("unknown"),
        "never_seen_unknown_rate_without_twin": splits["never_seen"]["without_twin"].get(
            "unknown"),
        "never_seen_category_right": ns.get("category_right"),
        "same_lab_coverage": splits["same_lab_cv"]["coverage"],
        "same_lab_mean_set_size": splits["same_lab_cv"]["mean_set_size"],
    }
    metrics: dict[str, Any] = {}
    for name in ("same_lab_cv", "person", "unit", "setup_to_steady"):
        for k, v in splits[name].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[f"{name}_{k}"] = v
    for grp in ("all", "with_twin", "without_twin"):
        for k, v in ns.items() if grp == "all" else splits["never_seen"][grp].items():
            if isinstance(v, (int, float)) and k != "types":
                metrics[f"never_seen_{grp}_{k}"] = v
    metrics["seconds_total"] = timing["total"]
    _log("cross_site" + ("-quick" if args.quick else ""), results,
         {"folds": folds, "window_s": args.window, "quick": args.quick,
          "captures": len(ds.captures), "week_long_hours": hours or "all",
          "site_shifts": ",".join(f"{s:g}" for s in SITE_SHIFTS)}, metrics)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

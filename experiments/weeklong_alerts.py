"""Week-long alerts: how many alerts a day nobody can explain, on the shared week-long captures.

The way a user runs the product: `flockwatch train baseline long-term-iot/ --learning-period
3d` (the same `train_baseline`, logged to MLflow), then `flockwatch score long-term-iot/` with
that model (the same `score_sources`). Counted: alerts of every kind (anomalous_window,
new_peer, new_device), on every device the inventory lists (gateways included), whose window
starts after the learning period; per device and per day of the scored period.

An alert is explained when
- a labelled user event (`event-labels/`, times in US Eastern time) of the alert's device, or of
  a device that acts through it (the Blink cameras' sync module arming them, the Sifely lock
  behind its hub), or of a labelled device among the alert's peers, falls in the alert's window
  or the window length before it (a cause comes before its effect); or
- the alert's device talked to 192.168.2.50 in that window: a host of another subnet, seen
  nowhere else in the week, that pings three devices on 12 March (docs/results.md, "Behavioural
  baselines").

Target: <= 0.3 unexplained alerts per device per day. The events are many (the Blink sync
module alone is armed and disarmed twice an hour), so `event_chance_share` says how many of
each device's scored windows an event would explain by chance: an "explained" that is weaker
than it looks. `unexplained_without_events` counts only the ping episode as explaining.

Usage: .venv/bin/python experiments/weeklong_alerts.py [--quick] [--learning-days 3]
       [--output results.json]
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

from flockwatch.features import extract
from flockwatch.features.attribution import attribute
from flockwatch.features.windows import assign_windows

KINDS = ("anomalous_window", "new_peer", "new_device")
PING_HOST = "192.168.2.50"
#: Event devices that are not captured themselves, and the captured devices they act through.
ACTS_THROUGH = {"blink-hub-01": ("blink-cam-01", "blink-cam-02"),
                "sifely-lock-01": ("sifely-hub-01",)}
TARGET = 0.3


def load_events(root: Path) -> pl.DataFrame:
    """Every labelled user event as (time UTC, captured device instance)."""
    parts = []
    for f in sorted((root / "event-labels").glob("*.csv")):
        parts.append(pl.read_csv(f, has_header=False, new_columns=["t", "device", "event"],
                                 schema_overrides={"t": pl.String}))
    if not parts:
        return pl.DataFrame(schema={"time": pl.Datetime("ms", "UTC"), "instance": pl.String})
    ev = pl.concat(parts)
    # Two formats: "March 08, 2021 at 01:01:28PM" and "March 08, 2021 at 09:00AM".
    local = pl.coalesce(
        pl.col("t").str.strptime(pl.Datetime("ms"), "%B %d, %Y at %I:%M:%S%p", strict=False),
        pl.col("t").str.strptime(pl.Datetime("ms"), "%B %d, %Y at %I:%M%p", strict=False),
    )
    # (A clock time skipped by the switch to summer time, 14 March 02:00-03:00, is dropped.)
    ev = ev.with_columns(local.dt.replace_time_zone("America/New_York", ambiguous="earliest",
                                                    non_existent="null")
                         .dt.convert_time_zone("UTC").alias("time"))
    mapping = pl.DataFrame(
        [(k, v) for k, vs in ACTS_THROUGH.items() for v in vs], schema=["device", "via"],
        orient="row")
    ev = ev.join(mapping, on="device", how="left").with_columns(
        pl.coalesce("via", "device").alias("instance"))
    return ev.select("time", "instance").drop_nulls()


def _time(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


class Events:
    """Labelled events per captured device, and whether one falls near a window."""

    def __init__(self, events: pl.DataFrame, labels: pl.DataFrame, window_s: float) -> None:
        self.inst_of_mac = dict(zip(labels["mac"].str.to_lowercase(), labels["device_instance"],
                                    strict=True))
        self.inst_of_ip = dict(zip(labels["ip"], labels["device_instance"], strict=True))
        self.times: dict[str, list[dt.datetime]] = {}
        for t, inst in events.iter_rows():
            self.times.setdefault(inst, []).append(t)
        self.before = dt.timedelta(seconds=window_s)

    def near(self, device: str, peers: list[str], start: dt.datetime, end: dt.datetime) -> bool:
        related = {self.inst_of_mac.get(device)} | {self.inst_of_ip.get(p) for p in peers}
        return any(start - self.before <= t <= end
                   for inst in related if inst for t in self.times.get(inst, ()))


def explain(alerts: list[dict[str, Any]], events: Events,
            ping_windows: set[tuple[str, str]]) -> list[str | None]:
    """Per alert: what explains it ('ping_episode', 'event') or None."""
    out: list[str | None] = []
    for a in alerts:
        peers = [p.rpartition(":")[0] for p in a.get("new_peers") or []]
        peers += list(a.get("local_peers") or [])
        if (a["device_id"], a["start"]) in ping_windows or PING_HOST in peers:
            out.append("ping_episode")
        elif events.near(a["device_id"], peers, _time(a["start"]), _time(a["end"])):
            out.append("event")
        else:
            out.append(None)
    return out


def run(root: Path, *, learning_days: float, epochs: int) -> dict[str, Any]:
    from flockwatch.features.output import iso_utc
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import load_model
    from flockwatch.serving.score import report as score_report
    from flockwatch.training.baseline import train_baseline

    t_start = time.monotonic()
    period_s = learning_days * 86400
    trained = train_baseline([root], learning_period_s=period_s, experiment="experiments",
                             epochs=epochs)
    t_train = time.monotonic() - t_start
    bundle = bundle_of(load_model(trained.model_uri, use_cache=False))
    result = extract([root])
    flows = result.flows
    rep = score_report(bundle, flows, result.problems, trained.model_uri)
    learning_end = cast(dt.datetime, flows["first_seen"].min()) + dt.timedelta(seconds=period_s)
    last = cast(dt.datetime, flows["last_seen"].max())
    days = (last - learning_end).total_seconds() / 86400
    end_iso = iso_utc(learning_end)
    after = [a for a in rep.alerts if a["start"] >= end_iso]
    assigned = assign_windows(attribute(flows), bundle.window)
    ping = assigned.filter(pl.col("peer_ip") == PING_HOST).select(
        "device_id", pl.col("start").map_elements(iso_utc, return_dtype=pl.String)
    ).unique()
    labels = pl.read_csv(root / "labels.csv")
    events = Events(load_events(root), labels, bundle.window.length_s)
    why = explain(after, events, set(ping.iter_rows()))
    scored = rep.windows.filter(pl.col("start") >= learning_end)
    devices = rep.devices["device_id"].to_list()
    labelled = set(labels["mac"].str.to_lowercase())
    per_device: dict[str, Any] = {}
    for d in devices:
        mine = [(a, w) for a, w in zip(after, why, strict=True) if a["device_id"] == d]
        unexplained = [a for a, w in mine if w is None]
        wins = scored.filter(pl.col("device_id") == d).select("start", "end").rows()
        chance = sum(events.near(d, [], s, e) for s, e in wins) / len(wins) if wins else None
        per_device[d] = {
            "labelled": d in labelled,
            "alerts": dict(Counter(a["kind"] for a, _ in mine)),
            "explained": dict(Counter(w for _, w in mine if w)),
            "unexplained": dict(Counter(a["kind"] for a in unexplained)),
            "unexplained_per_day": round(len(unexplained) / days, 3) if days > 0 else None,
            "scored_windows": len(wins),
            "event_chance_share": round(chance, 3) if chance is not None else None,
        }
    n_unexplained = sum(w is None for w in why)
    device_days = len(devices) * days
    per_dev_day = n_unexplained / device_days if device_days > 0 else None
    no_events = sum(w != "ping_episode" for w in why)
    return {
        "learning_days": learning_days,
        "epochs": epochs,
        "learning_end": end_iso,
        "scored_days": round(days, 3),
        "devices": len(devices),
        "alerts_whole_capture": len(rep.alerts),
        "alerts_whole_capture_by_kind": dict(Counter(a["kind"] for a in rep.alerts)),
        "alerts_after_learning": len(after),
        "alerts_after_learning_by_kind": {k: sum(a["kind"] == k for a in after) for k in KINDS},
        "explained": dict(Counter(w for w in why if w)),
        "unexplained": n_unexplained,
        "unexplained_by_kind": {k: sum(a["kind"] == k and w is None
                                       for a, w in zip(after, why, strict=True))
                                for k in KINDS},
        "unexplained_per_device_per_day": round(per_dev_day, 3) if per_dev_day is not None
        else None,
        "unexplained_without_events": no_events,
        "unexplained_without_events_per_device_per_day": round(no_events / device_days, 3)
        if device_days > 0 else None,
        "target_per_device_per_day": TARGET,
        "target_met": per_dev_day is not None and per_dev_day <= TARGET,
        "per_device": per_device,
        "unexplained_alerts": [
            {k: a.get(k) for k in ("kind", "device_id", "start", "message")}
            for a, w in zip(after, why, strict=True) if w is None][:50],
        "model_uri": trained.model_uri,
        "seconds": {"train": round(t_train, 1),
                    "total": round(time.monotonic() - t_start, 1)},
    }


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="fewer training epochs (CI); the counts are of the same pipeline")
    ap.add_argument("--learning-days", type=float, default=3.0)
    args = ap.parse_args()
    root = Path(args.data) / "long-term-iot"
    if not root.is_dir():
        print(f"skipped: {root} not found")
        return 0
    res = run(root, learning_days=args.learning_days, epochs=20 if args.quick else 80)
    metrics = {k: res[k] for k in ("alerts_after_learning", "unexplained",
                                   "unexplained_per_device_per_day", "devices")}
    metrics.update({f"unexplained.{k}": v for k, v in res["unexplained_by_kind"].items()})
    report("weeklong_alerts" + ("-quick" if args.quick else ""), res, args.output,
           params={"quick": args.quick, "learning_days": args.learning_days}, metrics=metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

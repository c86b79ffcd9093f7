"""Benchmark the web console on a 10,000-device inventory: first page served and rendered.

A real scored report (``--report``, else a synthetic site scored here with a quickly trained
model) is grown to ``--devices`` devices by cloning its devices under new MAC and IP
addresses, each clone with its original's alerts (so severities and counts are real shapes);
clones carry no scored windows, which the inventory page does not read. Then, on a real
``flockwatch serve`` on 127.0.0.1:

1. served: ``GET /`` (the first page of 50, by device), ``GET /?sort=alerts&order=desc`` and a
   category filter, ``--runs`` times each after a warm-up, p50 and p99 of the whole HTTP
   exchange (target: first page <= 300 ms), with ``GET /ping`` in the same run as the floor;
2. rendered: Debian's chromium through Playwright opens ``/`` ``--runs`` times, from navigation
   start to the load event (target <= 1 s); skipped, saying so, without chromium.

Usage: .venv/bin/python experiments/bench_console.py [--devices 10000] [--runs 20]
       [--report score.json]
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def scored_site(tmp: Path) -> dict[str, Any]:
    """A synthetic site (1 h learning, 1 h with every attack) scored by a model trained here."""
    import polars as pl

    from flockwatch.datasets.synth import HOSTS, synthesize
    from flockwatch.features import WindowSpec, extract, windows
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.serving.score import report as score_report
    from flockwatch.training.baseline import fit_baseline

    synthesize(tmp / "site", hours=2.0, learning_hours=1.0, seed=3)
    learn = extract([tmp / "site" / "learning.pcap"]).flows
    baseline, _ = fit_baseline(learn, window_s=300, epochs=20)
    win = windows(learn, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    clf = DeviceClassifier(n_estimators=40).fit(win, win["device_id"].replace_strict(types),
                                                win["source"])
    bundle = Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline)
    flows = extract([tmp / "site" / "attacks.pcap"]).flows
    doc: dict[str, Any] = json.loads(score_report(bundle, flows, []).to_json())
    return doc


def grow(doc: dict[str, Any], n: int) -> dict[str, Any]:
    """``doc`` with ``n`` devices: the originals, then clones under new addresses."""
    base = doc["devices"]
    alerts_of: dict[str, list[dict[str, Any]]] = {}
    for a in doc["alerts"]:
        alerts_of.setdefault(a["device_id"], []).append(a)
    devices = list(base)
    alerts = list(doc["alerts"])
    k = 0
    while len(devices) < n:
        src = base[k % len(base)]
        k += 1
        mac = "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}".format(*(k.to_bytes(5, "big")))
        ip = f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"
        devices.append({**src, "device_id": mac, "mac": mac, "ips": [ip],
                        "hostnames": [f"{h}-{k}" for h in src["hostnames"]],
                        "local_peers": [], "windows": 0, "anomalous_windows": 0})
        for a in alerts_of.get(src["device_id"], []):
            alerts.append({**a, "device_id": mac, "mac": mac, "ip": ip, "incident": None,
                           "message": a["message"].replace(src["device_id"], mac)})
    return {**doc, "devices": devices, "alerts": alerts}


def timed_get(port: int, path: str) -> tuple[float, int, int]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Accept": "text/html"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return time.perf_counter() - t, r.status, len(body)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main() -> None:
    ap = arg_parser(__doc__, data=False)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--report", help="a `flockwatch score --format json` report to grow")
    args = ap.parse_args()
    from flockwatch.serving.console import ReportSource
    from flockwatch.serving.rest import FlockwatchServer

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        doc = json.loads(Path(args.report).read_text()) if args.report else scored_site(tmp)
        big = grow(doc, args.devices)
        path = tmp / "big.json"
        path.write_text(json.dumps(big))
        t0 = time.perf_counter()
        source = ReportSource(path)
        load_s = time.perf_counter() - t0
        server = FlockwatchServer(None, "127.0.0.1", 0, source=source)
        server.start_background()
        port = server.port
        category = next((d["category"] for d in big["devices"] if d.get("category")),
                        "unknown")
        paths = {"first_page": "/", "by_alerts": "/?sort=alerts&order=desc",
                 "category": f"/?category={category}", "ping": "/ping"}
        served: dict[str, dict[str, float]] = {}
        try:
            for name, p in paths.items():
                for _ in range(3):
                    timed_get(port, p)  # warm-up
                xs = []
                for _ in range(args.runs):
                    dt, status, size = timed_get(port, p)
                    assert status == 200, (p, status)
                    xs.append(dt * 1000)
                served[name] = {"p50_ms": statistics.median(xs), "p99_ms": pct(xs, 0.99),
                                "bytes": size}
            rendered = render_times(f"http://127.0.0.1:{port}/", args.runs)
        finally:
            server.shutdown()
            server.server_close()
    results = {
        "devices": len(big["devices"]), "alerts": len(big["alerts"]),
        "report_mb": round(path_size_mb(big), 1), "load_s": round(load_s, 2),
        "served": served, "rendered": rendered,
        "targets": {"first_page_served_ms": 300, "first_page_rendered_ms": 1000},
        "note": "timed on a shared machine: other work ran at the same time",
    }
    metrics = {f"{k}_{m}": v for k, d in served.items() for m, v in d.items()}
    if rendered:
        metrics.update({f"rendered_{m}": v for m, v in rendered.items()
                        if isinstance(v, (int, float))})
    report("bench_console", results, args.output,
           params={"devices": args.devices, "runs": args.runs}, metrics=metrics)


def path_size_mb(doc: dict[str, Any]) -> float:
    return len(json.dumps(doc)) / 1e6


def render_times(url: str, runs: int) -> dict[str, Any] | None:
    if not CHROMIUM.exists():
        print(f"rendering not timed: {CHROMIUM} not installed", file=sys.stderr)
        return None
    from playwright.sync_api import sync_playwright

    xs: list[float] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = b.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)  # warm-up: the browser's own start is not the page's
        for _ in range(runs):
            page.goto("about:blank")
            page.goto(url, wait_until="load")
            nav = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
            xs.append(json.loads(nav)["loadEventEnd"])
        rows = page.locator("#inventory tbody tr.device").count()
        b.close()
    return {"p50_ms": statistics.median(xs), "p99_ms": pct(xs, 0.99), "rows": rows}


if __name__ == "__main__":
    main()

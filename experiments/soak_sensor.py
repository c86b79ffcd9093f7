"""Soak the live sensor: replay the shared captures and a port scan in a loop onto a veth pair
for a given duration (needs root, iproute2, tcpreplay, tcpdump) and record memory, drops,
windows scored and alerts written against those expected.

Each round replays ~100,000 packets built from the shared captures (``bench_extract``'s
builder) at ``--pps``, then a synthetic-site capture whose camera scans the network: every
round is one expected alert on the scanner. The sensor (``flockwatch sense``, 10 s windows,
a baseline learnt from an hour of the synthetic site) is sampled every ``--sample-every``
seconds: resident memory of its process tree (the sensor, its capture process, tcpdump), and
its state log. Memory must be flat after warm-up: the growth between minute 5 and the end is
reported against the target of 5 %.

Usage: sudo .venv/bin/python experiments/soak_sensor.py --duration 30m [--pps 20000]
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import build_capture  # noqa: E402
from common import arg_parser, report  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status)[1])  # type: ignore[index]
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, TypeError):
            continue
    return total / 1024


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--duration", default="30m", help="how long to soak, e.g. 30m, 2h")
    ap.add_argument("--pps", type=int, default=20_000, help="replay rate, packets/s")
    ap.add_argument("--packets", type=int, default=100_000, help="bulk packets per round")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warm-up", default="5m", help="memory growth is measured from here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("skipped: needs root (network namespace, capture)")
        return 0
    from flockwatch.datasets.synth import host, synthesize_capture
    from flockwatch.features import WindowSpec, extract
    from flockwatch.features.live import replay_link
    from flockwatch.features.windows import parse_duration
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline

    duration = parse_duration(args.duration) or 1800.0
    warm_up = parse_duration(args.warm_up) or 300.0
    window = 10.0
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        learn = synthesize_capture(tmp / "learn.pcap", hours=1.0, seed=20)
        model, _ = fit_baseline(extract([learn.path]).flows, window_s=window, epochs=30)
        save_model(Bundle(window=WindowSpec(window), baseline=model), tmp / "model")
        attack = synthesize_capture(tmp / "attack.pcap", hours=40 / 3600, seed=21,
                                    attacks=["port_scan"], first_attack_s=1,
                                    attack_duration_s=30)
        bulk = tmp / "bulk.pcap"
        n_bulk = build_capture(Path(args.data), args.packets, bulk)
        scanner = host("camera-1").mac
        alerts = tmp / "alerts.jsonl"
        samples: list[dict[str, float]] = []
        rounds: list[float] = []  # when each round's scan was replayed
        with replay_link("fws") as (ns, a, b):
            flockwatch = str(Path(sys.executable).parent / "flockwatch")
            proc = subprocess.Popen([flockwatch, "sense", "-i", a, "--model", str(tmp / "model"),
                                     "--alerts", str(alerts), "--state-every", "5"],
                                    stderr=subprocess.PIPE, text=True)
            lines: list[str] = []
            threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()
            while not any("capturing on" in ln for ln in lines):
                if proc.poll() is not None:
                    raise SystemExit("sense ended: " + "".join(lines))
                time.sleep(0.2)
            t0 = time.monotonic()
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(args.sample_every):
                    samples.append({"t_s": round(time.monotonic() - t0, 1),
                                    "rss_mb": round(tree_rss_mb(proc.pid), 1)})

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            while time.monotonic() - t0 < duration:
                for cap in (bulk, attack.path):
                    if cap == attack.path:
                        rounds.append(time.time())
                    subprocess.run(["ip", "netns", "exec", ns, "tcpreplay", "--pps",
                                    str(args.pps), "-i", b, str(cap)],
                                   capture_output=True, check=True)
            time.sleep(2 * window)  # the last round's windows close and are scored
            stop.set()
            sampler.join()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
            time.sleep(0.5)
        written = [json.loads(x) for x in alerts.read_text().splitlines()]
    # risk findings share the file (once per device and rule); the alerts are the rest
    alerts_only = [w for w in written if "first_seen" not in w]
    last = [ln for ln in lines if "stopped:" in ln][-1]
    counters = dict(kv.split("=", 1) for kv in last.split("stopped: ")[1].split())
    # a round is caught when an alert on the scanner starts within a window of its replay
    hits = [dt.datetime.fromisoformat(w["start"].replace("Z", "+00:00")).timestamp()
            for w in written if w["mac"] == scanner and w.get("start")]  # findings: no start
    caught = sum(any(-window <= h - r <= 60 for h in hits) for r in rounds)
    after = [s["rss_mb"] for s in samples if s["t_s"] >= warm_up]
    growth = (max(after[-3:]) / after[0] - 1) if len(after) > 3 else None
    res = {
        "duration_s": duration, "pps": args.pps, "bulk_packets": n_bulk, "window_s": window,
        "rounds": len(rounds), "rounds_alerted": caught, "lost_alerts": len(rounds) - caught,
        "alerts_written": len(alerts_only), "alerts_counted": int(counters["alerts"]),
        "findings_written": len(written) - len(alerts_only),
        "packets": int(counters["packets"]), "drops": int(counters["drops"]),
        "windows": int(counters["windows"]),
        "windows_dropped": int(counters.get("windows_dropped", 0)),
        "rss_mb_at_warm_up": after[0] if after else None,
        "rss_mb_end": after[-1] if after else None,
        "rss_mb_max": max(s["rss_mb"] for s in samples) if samples else None,
        "rss_growth_after_warm_up": None if growth is None else round(growth, 4),
        "sensor_exit": proc.returncode, "rss_samples": samples,
    }
    report("soak_sensor", res, args.output,
           params={"duration_s": duration, "pps": args.pps, "packets": args.packets},
           metrics={k: v for k, v in res.items() if isinstance(v, (int, float))})
    return 0


if __name__ == "__main__":
    sys.exit(main())

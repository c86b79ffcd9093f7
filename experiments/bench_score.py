"""Benchmark scoring: `flockwatch score` vs bare NFStream, pyfunc batch throughput, REST latency.

1. `flockwatch score` (extract + windows + classifier + baseline + report) on a capture of at
   least 500k packets built from the shared captures, versus bare
   `NFStreamer(...).to_pandas()` on the same file in the same run (target ratio >= 0.8): both
   timed as whole processes (the headline ratio), and bare NFStream also timed inside an
   already started interpreter (a stricter ratio that charges flockwatch its start-up).
2. In-process scoring through the MLflow pyfunc (`model.predict(flow records)`): windows/s in
   batch (target >= 20,000), best and median of repeated runs, with timestamps as epoch ms
   (what `flows_to_pandas` gives) and as datetimes.
3. REST on loopback (`flockwatch serve`'s server): latency of requests of 100 flows (target
   p99 <= 50 ms).
4. The cost of three-level identification (product evidence, category, vendor, prediction
   sets): the same windows scored through a pyfunc whose classifier is the behaviour
   classifier alone and one whose classifier is the ``DeviceIdentifier``, alternately, in
   the same run; ratios of batch throughput and of REST p50/p99 (target: no loss beyond 5 %).

5. Peak memory against capture size (``--memory`` runs this part alone): `flockwatch score`
   and bare NFStream iteration (every flow read, none kept) on captures of 0.78, 1.55 and
   3.1 M packets, each in a fresh process; the peak is the largest resident set of the
   process and its NFStream meters (``RUSAGE_CHILDREN``). Target: the largest capture's peak
   within 1.2x the smallest's. The captures replay the shared ones back to back with gaps
   over an hour cut to an hour (``build_replay_capture``): ``build_capture`` repeats their
   whole 6-year span, which puts a 3.1 M-packet capture past 2038, where pcap time wraps.

The model is trained here on a synthetic site (classifier + baseline, 300 s windows).
Part 1 also times `flockwatch score` with the payload pass (``features.payload``: software
identity, TLS, credentials, industrial columns and announcements) off, in the same run, so its
cost is a ratio (``payload_pass_overhead``); ``--score-only`` runs part 1 alone.

Usage: .venv/bin/python experiments/bench_score.py [--packets 500000] [--no-capture]
                                                   [--score-only]
       .venv/bin/python experiments/bench_score.py --memory [--memory-packets 780000,3100000]
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import BARE, build_capture, run  # noqa: E402
from common import arg_parser, report  # noqa: E402

SCORE = """
import resource, sys, time, subprocess
t = time.perf_counter()
subprocess.run([sys.argv[3], "score", sys.argv[1], "--model", sys.argv[2], "--format", "json",
                "-o", sys.argv[4], "-q"], check=True)
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(dt, ru.ru_maxrss, 0, ru.ru_utime + ru.ru_stime)
"""
# The same `flockwatch score`, with read_capture's payload pass (payload inspection and
# announcements, ``features.payload``) off: what the pass costs, measured in the same run.
SCORE_NO_PASS = """
import resource, sys, time, subprocess
code = (
    "import functools, sys\\n"
    "import flockwatch.features.flows as ff\\n"
    "ff.read_capture = functools.partial(ff.read_capture, announcements=False, payload=False)\\n"
    "from flockwatch.serving.cli import main\\n"
    "sys.argv = ['flockwatch'] + sys.argv[1:]\\n"
    "main()\\n")
t = time.perf_counter()
subprocess.run([sys.executable, "-c", code, "score", sys.argv[1], "--model", sys.argv[2],
                "--format", "json", "-o", sys.argv[4], "-q"], check=True)
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(dt, ru.ru_maxrss, 0, ru.ru_utime + ru.ru_stime)
"""
# Bare NFStream as a whole process too (interpreter start and imports included), as a user
# running it would: the comparison that matches timing the `flockwatch score` process.
BARE_PROCESS = """
import resource, sys, time, subprocess
t = time.perf_counter()
subprocess.run([sys.executable, "-c", sys.argv[2], sys.argv[1]], check=True,
               capture_output=True)
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(dt, ru.ru_maxrss, 0, ru.ru_utime + ru.ru_stime)
"""


# Bare NFStream iterating a capture's flows, as flockwatch reads them, keeping none: the
# floor of any reader's memory (NFStream's own flow cache and its meter processes).
BARE_ITER = """
import sys, time, nfstream
t = time.perf_counter()
n = sum(1 for _ in nfstream.NFStreamer(source=sys.argv[1], statistical_analysis=True,
                                       n_dissections=20))
print(time.perf_counter() - t, 0, n)
"""
PEAK = """
import resource, sys, time, subprocess
t = time.perf_counter()
out = subprocess.run(sys.argv[2:], check=True, capture_output=True, text=True).stdout
dt = time.perf_counter() - t
rows = out.strip().splitlines()[-1].split()[-1] if out.strip() else "0"
print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rows)
"""


def build_replay_capture(data: Path, target: int, dest: Path, max_gap_s: float = 3600.0) -> int:
    """``target`` packets of the shared Ethernet captures, in time order, gaps longer than
    ``max_gap_s`` cut to it, repeated one after another (each repeat ``max_gap_s`` after the
    last) until there are enough."""
    import struct

    from bench_extract import ethernet_packets

    sources = sorted((data / "iot-sentinel").rglob("*.pcap")) + sorted(
        (data / "long-term-iot").rglob("*.pcap")) + sorted((data / "modbus-scada").glob("*.pcap"))
    packets = sorted((p for src in sources for p in ethernet_packets(src)), key=lambda x: x[0])
    if not packets:
        raise SystemExit(f"no Ethernet pcaps under {data}")
    timed: list[tuple[float, bytes]] = []
    cut, prev = 0.0, packets[0][0]
    for ts, frame in packets:
        cut += max(0.0, ts - prev - max_gap_s)
        prev = ts
        timed.append((ts - cut, frame))
    span = timed[-1][0] - timed[0][0] + max_gap_s
    n = 0
    with dest.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        rep = 0
        while n < target:
            for ts, frame in timed[:target - n]:
                t = ts + rep * span
                sec = int(t)
                fh.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)))
                fh.write(frame)
            n += min(len(timed), target - n)
            rep += 1
    return n


def memory_by_size(data: Path, tmp: Path, model: Path, sizes: list[int]) -> dict[str, Any]:
    """Part 5: peak memory of `flockwatch score` and of bare NFStream iteration by capture
    size, each size's runs alternating, every run a fresh process."""
    flockwatch = str(Path(sys.executable).parent / "flockwatch")
    rows: list[dict[str, Any]] = []
    for size in sizes:
        cap = tmp / f"replay-{size}.pcap"
        n = build_replay_capture(data, size, cap)
        bare = run(PEAK, str(cap), sys.executable, "-c", BARE_ITER, str(cap))
        ours = run(PEAK, str(cap), flockwatch, "score", str(cap), "--model", str(model),
                   "--format", "json", "-o", str(tmp / "mem.json"), "-q")
        doc = json.loads((tmp / "mem.json").read_text())
        rows.append({"packets": n, "mb": round(cap.stat().st_size / 1e6), "flows": bare[2],
                     "windows": len(doc["windows"]),
                     "bare_peak_mb": round(bare[1] / 1024), "score_peak_mb": round(ours[1] / 1024),
                     "bare_seconds": round(bare[0], 1), "score_seconds": round(ours[0], 1)})
        cap.unlink()
    first, last = rows[0], rows[-1]
    return {"sizes": rows,
            "score_peak_ratio_largest_to_smallest": round(last["score_peak_mb"]
                                                          / first["score_peak_mb"], 3),
            "bare_peak_ratio_largest_to_smallest": round(last["bare_peak_mb"]
                                                         / first["bare_peak_mb"], 3),
            "score_over_bare_seconds": [round(r["score_seconds"] / r["bare_seconds"], 3)
                                        for r in rows]}


def run_cpu(code: str, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the process's children included) of a
    timing script that prints them: CPU time is what a loaded machine distorts least."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir())
    dt, _rss, _rows, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(dt), float(cpu)


def train_model(tmp: Path, *, identity: bool = False, name: str = "model") -> Path:
    """Classifier + baseline on the synthetic site; with ``identity`` the classifier is the
    three-level ``DeviceIdentifier`` (evidence per source and device)."""
    from flockwatch.datasets.synth import HOSTS, synthesize
    from flockwatch.features import WindowSpec, extract, windows
    from flockwatch.features.evidence import device_evidence
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.identity import DeviceIdentifier
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline

    if not (tmp / "site").is_dir():
        synthesize(tmp / "site", hours=2.0, learning_hours=3.0, seed=3)
    flows = extract([tmp / "site" / "learning.pcap", tmp / "site" / "attacks.pcap"]).flows
    learn = flows.filter(pl.col("source").str.ends_with("learning.pcap"))
    baseline, _ = fit_baseline(learn, window_s=300)
    win = windows(flows, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    y = win["device_id"].replace_strict(types)
    clf: object
    if identity:
        ev = device_evidence(flows)
        samples = {(src, types[dev]): [list(toks)] for src, dev, toks in ev.iter_rows()
                   if dev in types}
        cats = {h.device_type: h.category for h in HOSTS}
        clf = DeviceIdentifier().fit(win, y, win["source"], samples, categories=cats)
    else:
        clf = DeviceClassifier().fit(win, y, win["source"])
    save_model(Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline), tmp / name)
    return tmp / name


def rest_latency(bundle_path: Path, records: list[dict[str, object]], requests: int = 300
                 ) -> np.ndarray:
    """Milliseconds per request of 100 flows to a loopback REST server (first 20 dropped)."""
    from flockwatch.models.bundle import load_bundle
    from flockwatch.serving.rest import FlockwatchServer

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = FlockwatchServer(load_bundle(bundle_path), "127.0.0.1", port)
    server.start_background()
    lat = []
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(requests):
        start = (i * 100) % (len(records) - 100)
        body = json.dumps({"dataframe_records": records[start:start + 100]}).encode()
        t = time.perf_counter()
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t)
        assert r.status == 200
    server.shutdown()
    return np.array(lat[20:]) * 1000


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--packets", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--score-only", action="store_true",
                    help="run part 1 alone (score vs bare NFStream, with and without the "
                    "payload pass)")
    ap.add_argument("--no-capture", action="store_true",
                    help="skip part 1 (score vs bare NFStream on a 500k-packet capture)")
    ap.add_argument("--memory", action="store_true",
                    help="run part 5 alone: peak memory of score by capture size")
    ap.add_argument("--memory-packets", default="780000,1550000,3100000",
                    help="capture sizes of part 5, in packets, comma-separated")
    args = ap.parse_args()
    res: dict[str, object] = {}
    if args.memory:
        if not Path(args.data).is_dir():
            print(f"skipped: no shared captures at {args.data}")
            return 0
        with tempfile.TemporaryDirectory() as tmpd:
            tmp = Path(tmpd)
            sizes = [int(x) for x in args.memory_packets.split(",")]
            res["memory_by_size"] = memory_by_size(Path(args.data), tmp, train_model(tmp), sizes)
        mem = res["memory_by_size"]
        assert isinstance(mem, dict)
        report("bench_score_memory", res, args.output, params={"sizes": args.memory_packets},
               metrics={k: v for k, v in mem.items() if isinstance(v, float)})
        return 0
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model = train_model(tmp)
        flockwatch = str(Path(sys.executable).parent / "flockwatch")
        if Path(args.data).is_dir() and not args.no_capture:
            cap = tmp / "bench.pcap"
            n = build_capture(Path(args.data), args.packets, cap)
            bare, bare_proc, ours, no_pass = [], [], [], []
            for _ in range(args.repeats):
                bare.append(run(BARE, str(cap)))
                bare_proc.append(run_cpu(BARE_PROCESS, str(cap), BARE))
                ours.append(run_cpu(SCORE, str(cap), str(model), flockwatch,
                                    str(tmp / "r.json")))
                no_pass.append(run_cpu(SCORE_NO_PASS, str(cap), str(model), flockwatch,
                                       str(tmp / "r-no-pass.json")))
            b_t, o_t = min(x[0] for x in bare), min(x[0] for x in ours)
            bp_t = min(x[0] for x in bare_proc)
            np_t = min(x[0] for x in no_pass)
            doc = json.loads((tmp / "r.json").read_text())
            part1: dict[str, Any] = {
                "packets": n, "bare_process_pps": round(n / bp_t), "score_pps": round(n / o_t),
                # both whole processes, start-up included: the headline ratio
                "ratio": round(bp_t / o_t, 3),
                # stricter: bare NFStream timed inside an already started Python, imports
                # excluded, against the whole `flockwatch score` process
                "bare_in_process_pps": round(n / b_t),
                "ratio_vs_in_process": round(b_t / o_t, 3),
                "windows_scored": len(doc["windows"]),
                # the payload pass's share: score with it over score without it, and the
                # headline ratio were it off
                "payload_pass_overhead": round(o_t / np_t, 3),
                "ratio_without_payload_pass": round(bp_t / np_t, 3),
                # the same in CPU seconds (all processes), least distorted by a loaded
                # machine: bare NFStream's over score's, and score's with the pass over without
                "cpu_ratio": round(min(x[1] for x in bare_proc) / min(x[1] for x in ours), 3),
                "payload_pass_cpu_overhead": round(min(x[1] for x in ours)
                                                   / min(x[1] for x in no_pass), 3),
                "runs_seconds": {"bare_in_process": [round(x[0], 2) for x in bare],
                                 "bare_process": [round(x[0], 2) for x in bare_proc],
                                 "score": [round(x[0], 2) for x in ours],
                                 "score_without_payload_pass": [round(x[0], 2)
                                                                for x in no_pass]},
                "cpu_seconds": {"bare_process": [round(x[1], 2) for x in bare_proc],
                                "score": [round(x[1], 2) for x in ours],
                                "score_without_payload_pass": [round(x[1], 2)
                                                               for x in no_pass]},
            }
            res["score_vs_nfstream"] = part1
            print(f"score vs bare NFStream (whole processes): {part1['ratio']} (target >= 0.8); "
                  f"payload pass {part1['payload_pass_overhead']} x the time without it",
                  file=sys.stderr)
        if args.score_only:
            first = res.get("score_vs_nfstream", {})
            assert isinstance(first, dict)
            report("bench_score", res, args.output, params={"packets": args.packets},
                   metrics={f"score_vs_nfstream.{m}": v for m, v in first.items()
                            if isinstance(v, (int, float))})
            return 0
        # 2. pyfunc batch throughput on flow records (windows out per second).
        import mlflow

        from flockwatch.features import extract
        from flockwatch.models.scoring import flows_to_pandas

        pyfunc = mlflow.pyfunc.load_model(str(model))
        flows = extract([tmp / "site" / "learning.pcap"]).flows
        # Many sites' worth of devices: replicate with distinct device addresses and times.
        reps = []
        for i in range(40):
            reps.append(flows.with_columns(
                (pl.col("src_mac").str.slice(0, 15) + pl.lit(f"{i:02x}")).alias("src_mac"),
                pl.lit(f"site-{i}").alias("source")))
        big_pl = pl.concat(reps)
        big = flows_to_pandas(big_pl)  # timestamps as epoch ms
        # The same flows with timezone-naive datetimes: MLflow checks untyped columns value by
        # value, and datetimes are the slowest to check.
        big_dt = big_pl.with_columns(
            pl.col("first_seen", "last_seen").dt.replace_time_zone(None)).to_pandas()
        pyfunc.predict(big.head(2000))  # warm-up
        for name, frame in (("pyfunc_batch", big), ("pyfunc_batch_datetimes", big_dt)):
            times, n_out = [], 0
            for _ in range(args.repeats + 1):
                t = time.perf_counter()
                n_out = len(pyfunc.predict(frame))
                times.append(time.perf_counter() - t)
            res[name] = {"flows": len(frame), "windows": n_out,
                         "seconds": [round(x, 3) for x in times],
                         "windows_per_s": round(n_out / min(times)),
                         "windows_per_s_median": round(n_out / float(np.median(times)))}
        # 3. REST latency, 100 flows a request.
        from flockwatch.features.output import frame_records

        records = frame_records(flows)
        lat_ms = rest_latency(model / "artifacts" / "bundle.pkl", records)
        res["rest_100_flows"] = {"requests": len(lat_ms),
                                 "p50_ms": round(float(np.median(lat_ms)), 1),
                                 "p99_ms": round(float(np.percentile(lat_ms, 99)), 1)}
        # 4. Identification's cost: behaviour alone vs the three-level identifier, the same
        # windows, alternating rounds so that machine noise falls on both alike.
        ident = train_model(tmp, identity=True, name="model-identity")
        models = {"behaviour": model, "identity": ident}
        loaded = {k: mlflow.pyfunc.load_model(str(v)) for k, v in models.items()}
        batch: dict[str, list[float]] = {k: [] for k in models}
        rest: dict[str, list[np.ndarray]] = {k: [] for k in models}
        for _ in range(args.repeats + 1):
            for k in models:
                t = time.perf_counter()
                loaded[k].predict(big)
                batch[k].append(time.perf_counter() - t)
                rest[k].append(rest_latency(models[k] / "artifacts" / "bundle.pkl", records,
                                            requests=170))
        cost: dict[str, Any] = {}
        for k in models:
            all_lat = np.concatenate(rest[k])
            cost[k] = {"batch_seconds": round(min(batch[k]), 3),
                       "rest_p50_ms": round(float(np.median(all_lat)), 1),
                       "rest_p99_ms": round(float(np.percentile(all_lat, 99)), 1)}
        cost["ratio_batch_time"] = round(cost["identity"]["batch_seconds"]
                                         / cost["behaviour"]["batch_seconds"], 3)
        cost["ratio_rest_p50"] = round(cost["identity"]["rest_p50_ms"]
                                       / cost["behaviour"]["rest_p50_ms"], 3)
        cost["ratio_rest_p99"] = round(cost["identity"]["rest_p99_ms"]
                                       / cost["behaviour"]["rest_p99_ms"], 3)
        res["identity_cost"] = cost
    flat = {f"{k}.{m}": v for k, d in res.items() if isinstance(d, dict)
            for m, v in d.items() if isinstance(v, (int, float))}
    flat.update({f"identity_cost.{k}.{m}": v for k, d in cost.items()
                 if isinstance(d, dict) for m, v in d.items()})
    report("bench_score", res, args.output, params={"packets": args.packets}, metrics=flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: extraction in-process vs a 1-worker and a 2-worker Dask LocalCluster, and a
projection of cluster wall time from the measured per-capture and per-window costs.

One run times, on the same captures (IoT Sentinel, 442 files; ``--limit`` for fewer):
``extract`` in-process (its default thread pool, and one thread), ``--cluster local:1`` and
``local:2`` (cluster start-up timed apart from the extraction), interleaved chunk by chunk so
that other jobs' load falls on all four alike, and checks that every run gives the same flow
table row for row. It reports throughput ratios against the
in-process runs, each worker's peak memory (the worker process plus its NFStream metering
children), the per-window cost of the window features and of a LightGBM fit, and projects
the wall time of 10,000 captures and of 1 TB of pcap on 16 and 64 workers, naming the
bottleneck. Figures of a shared, loaded machine are ratios of one run; say so when quoting.

Usage: .venv/bin/python experiments/bench_cluster.py [--limit N] [--output out.json]
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import polars as pl  # noqa: E402
from common import arg_parser, report  # noqa: E402

#: Assumptions of the projection (not measured here; stated in the output).
ASSUME = {
    "scheduler_s_per_task": 0.001,   # Dask's documented overhead, about 1 ms a task
    "storage_gb_s": 1.0,             # aggregate read bandwidth of the shared storage
    "network_gb_s": 1.0,             # per-worker network for the window shuffle
    "window_bytes": 206 * 8,         # one window: 206 float64 features
    "lgbm_parallel_efficiency": 0.5,  # data-parallel LightGBM speed-up per worker added
}


def peak_rss_mb() -> float:
    """Peak RSS of this process plus its largest finished child (NFStream meters), in MB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (me + kids) / 1024


def start_cluster(stack: contextlib.ExitStack, workers: int) -> tuple[Any, float]:
    from flockwatch.features.cluster import connect

    t0 = time.perf_counter()
    client = stack.enter_context(connect(f"local:{workers}"))
    client.wait_for_workers(workers, timeout=120)
    return client, time.perf_counter() - t0


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--limit", type=int, default=None, help="only the first N captures")
    ap.add_argument("--rounds", type=int, default=4,
                    help="chunks the captures are cut into, each run by every mode in turn")
    ap.add_argument("--fit", action="store_true", default=True,
                    help="time a LightGBM fit on the windows (per-window training cost)")
    ap.add_argument("--no-fit", dest="fit", action="store_false")
    args = ap.parse_args()
    root = Path(args.data) / "iot-sentinel"
    files = sorted(str(p) for p in root.glob("*/*.pcap"))
    if not files:
        print(f"skipped: no IoT Sentinel captures under {root}")
        return
    files = files[: args.limit] if args.limit else files
    size = sum(Path(f).stat().st_size for f in files)

    from flockwatch.features.cluster import extract_on
    from flockwatch.features.flows import extract
    from flockwatch.features.windows import WindowSpec, windows

    # The four runs interleaved, chunk by chunk in rotating order, both clusters up all the
    # while (idle workers cost nothing): load from other jobs on a shared machine then falls
    # on every run alike, and the ratios hold even when absolute times drift.
    modes = ["in_process", "in_process_1_thread", "cluster_1", "cluster_2"]
    seconds = dict.fromkeys(modes, 0.0)
    flows: dict[str, list[Any]] = {m: [] for m in modes}
    chunks = [files[i::args.rounds] for i in range(args.rounds)]
    with contextlib.ExitStack() as stack:
        clients, startup = {}, {}
        for w in (1, 2):
            clients[f"cluster_{w}"], startup[f"cluster_{w}"] = start_cluster(stack, w)
        for r, chunk in enumerate(chunks):
            for m in modes[r % 4:] + modes[:r % 4]:
                t = time.perf_counter()
                if m.startswith("cluster"):
                    res = extract_on(clients[m], chunk)
                else:
                    res = extract(chunk, workers=1 if m.endswith("thread") else None)
                seconds[m] += time.perf_counter() - t
                flows[m].append(res.flows)
        peaks = {m: sorted(round(v, 1) for v in clients[m].run(peak_rss_mb).values())
                 for m in clients}
    in_process_peak = round(peak_rss_mb(), 1)
    runs: dict[str, dict[str, Any]] = {
        m: {"seconds": seconds[m], "flows": pl.concat(flows[m])} for m in modes}
    for m in clients:
        runs[m]["startup_seconds"] = startup[m]
        runs[m]["worker_peak_mb"] = peaks[m]
    runs["in_process"]["peak_mb"] = in_process_peak
    ref = runs["in_process"]["flows"]
    identical = {k: bool(r["flows"].equals(ref)) for k, r in runs.items()}

    # NFStream's cost a byte, apart from its start-up a file: the week-long captures (a few
    # MB each) read one after another, less the start-up the small captures measured
    big = sorted(str(p) for p in (Path(args.data) / "long-term-iot").glob("*/*.pcap"))
    big_bytes = sum(Path(f).stat().st_size for f in big)
    t = time.perf_counter()
    big_flows = extract(big, workers=1).flows if big else None
    big_s = time.perf_counter() - t
    startup_s = runs["in_process_1_thread"]["seconds"] / len(files)
    per_byte_s = max(big_s - startup_s * len(big), 1e-9) / big_bytes if big else None

    # per-window costs: window features, and a LightGBM fit (10 s windows: enough of them
    # that the fit's fixed costs weigh little)
    t = time.perf_counter()
    win = windows(ref, WindowSpec(10))
    window_s = time.perf_counter() - t
    site_windows_per_byte = (windows(big_flows, WindowSpec(300)).height / big_bytes
                             if big_flows is not None and big_flows.height else None)
    fit_s = None
    # the fit: on the week-long captures' windows (thousands, few classes), else these
    fit_win = (windows(big_flows, WindowSpec(300))
               if big_flows is not None and big_flows.height else win)
    if args.fit and fit_win.height:
        from flockwatch.models.classifier import DeviceClassifier

        labelled = fit_win.with_columns(
            pl.col("source").str.split("/").list.get(-2).alias("label"))
        if labelled["label"].n_unique() >= 2:
            t = time.perf_counter()
            DeviceClassifier(n_estimators=100, calibration_folds=2).fit(
                labelled, labelled["label"], labelled["source"])
            fit_s = time.perf_counter() - t
    n_fit = fit_win.height

    def rate(k: str) -> float:
        return float(len(files) / runs[k]["seconds"])

    per_capture_s = runs["cluster_1"]["seconds"] / len(files)  # one worker, one core
    n_windows = win.height
    results: dict[str, Any] = {
        "captures": len(files), "bytes": size, "flows": ref.height, "windows": n_windows,
        "identical_flows": identical,
        "seconds": {k: round(r["seconds"], 2) for k, r in runs.items()},
        "cluster_startup_seconds": {k: round(r["startup_seconds"], 2) for k, r in runs.items()
                                    if "startup_seconds" in r},
        "captures_per_s": {k: round(rate(k), 2) for k in runs},
        "ratios": {
            "cluster_1_vs_in_process": round(rate("cluster_1") / rate("in_process"), 3),
            "cluster_1_vs_in_process_1_thread": round(
                rate("cluster_1") / rate("in_process_1_thread"), 3),
            "cluster_2_vs_cluster_1": round(rate("cluster_2") / rate("cluster_1"), 3),
            "cluster_2_vs_in_process": round(rate("cluster_2") / rate("in_process"), 3),
        },
        "peak_memory_mb": {"in_process": runs["in_process"]["peak_mb"],
                           "cluster_1_workers": runs["cluster_1"]["worker_peak_mb"],
                           "cluster_2_workers": runs["cluster_2"]["worker_peak_mb"]},
        "costs": {
            "extract_s_per_capture_one_worker": round(per_capture_s, 4),
            "nfstream_startup_s_per_file": round(startup_s, 4),
            "nfstream_mb_s_one_core": round(1e-6 / per_byte_s, 3) if per_byte_s else None,
            "windows_us_per_window": round(window_s / max(n_windows, 1) * 1e6, 1),
            "lightgbm_fit_ms_per_window": (round(fit_s / n_fit * 1e3, 3)
                                           if fit_s and n_fit else None),
            "site_windows_per_mb": (round(site_windows_per_byte * 1e6, 2)
                                    if site_windows_per_byte else None),
            "fit_windows": n_fit,
        },
        "assumptions": ASSUME,
        "projection": project(
            startup_s, per_byte_s or 0.0, size / len(files),
            {"10000_captures": n_windows / size, "1_TB": site_windows_per_byte or 0.0},
            window_s / max(n_windows, 1),
            (fit_s / n_fit) if fit_s and n_fit else None),
        "note": "one run on a shared 2-core machine under load from other jobs: compare the "
                "ratios, not the absolute times",
    }
    report("bench_cluster", results, args.output,
           params={"captures": len(files), "bytes": size},
           metrics={f"ratio_{k}": v for k, v in results["ratios"].items()})


def project(startup_s: float, per_byte_s: float, mean_bytes: float,
            windows_per_byte: dict[str, float], window_s: float,
            fit_s_per_window: float | None) -> dict[str, Any]:
    """Wall time of each stage on W workers from the measured costs (one worker = one
    core), and the stage that dominates. 10,000 captures are IoT Sentinel-like (their mean
    size, their windows a byte); 1 TB is site traffic in captures of 1 GB (the week-long
    captures' windows a byte). Stages overlap in practice; the sum is an upper bound, the
    largest stage a lower one."""
    out: dict[str, Any] = {}
    loads = {"10000_captures": (10_000 * mean_bytes, mean_bytes), "1_TB": (1e12, 1e9)}
    for load, (total, capture_bytes) in loads.items():
        n_captures = total / capture_bytes
        n_windows = total * windows_per_byte[load]
        for w in (16, 64):
            tasks = max(n_captures / 32, total / (64 << 20))  # plan_batches: 32 files, 64 MB
            stages = {
                "io": total / (ASSUME["storage_gb_s"] * 1e9),
                "nfstream": (n_captures * startup_s + total * per_byte_s) / w,
                "scheduler": tasks * ASSUME["scheduler_s_per_task"],
                "windows": n_windows * window_s / w,
                "shuffle": n_windows * ASSUME["window_bytes"] / (ASSUME["network_gb_s"] * 1e9),
            }
            if fit_s_per_window is not None:
                speedup = max(1.0, w * ASSUME["lgbm_parallel_efficiency"])
                stages["lightgbm"] = n_windows * fit_s_per_window / speedup
            out[f"{load}_{w}_workers"] = {
                "windows": round(n_windows),
                "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
                "bottleneck": max(stages, key=lambda k: stages[k]),
                "wall_seconds_at_most": round(sum(stages.values()), 1),
            }
    return out


if __name__ == "__main__":
    main()

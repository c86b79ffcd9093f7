"""Benchmark: extraction in-process vs a 1-worker and a 2-worker Dask LocalCluster, and a
projection of cluster wall time from the measured per-capture and per-window costs.

One run times, on the same captures (IoT Sentinel, 442 files; ``--limit`` for fewer):
``extract`` in-process (its default thread pool, and one thread), then ``--cluster local:1``
and ``local:2`` (cluster start-up timed apart from the extraction), and checks that every
run gives the same flow table row for row. It reports throughput ratios against the
in-process runs, each worker's peak memory (the worker process plus its NFStream metering
children), the per-window cost of the window features and of a LightGBM fit, and projects
the wall time of 10,000 captures and of 1 TB of pcap on 16 and 64 workers, naming the
bottleneck. Figures of a shared, loaded machine are ratios of one run; say so when quoting.

Usage: .venv/bin/python experiments/bench_cluster.py [--limit N] [--output out.json]
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def timed_cluster(files: list[str], workers: int) -> dict[str, Any]:
    from flockwatch.features.cluster import connect, extract_on

    t0 = time.perf_counter()
    with connect(f"local:{workers}") as client:
        client.wait_for_workers(workers, timeout=120)
        started = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = extract_on(client, files)
        seconds = time.perf_counter() - t1
        peaks = client.run(peak_rss_mb)
    return {"seconds": seconds, "startup_seconds": started, "flows": result.flows,
            "worker_peak_mb": sorted(round(v, 1) for v in peaks.values())}


def main() -> None:
    ap = arg_parser(__doc__)
    ap.add_argument("--limit", type=int, default=None, help="only the first N captures")
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

    from flockwatch.features.flows import extract
    from flockwatch.features.windows import WindowSpec, windows

    runs: dict[str, dict[str, Any]] = {}
    for name, kw in (("in_process", {}), ("in_process_1_thread", {"workers": 1})):
        t = time.perf_counter()
        res = extract(files, **kw)  # type: ignore[arg-type]
        runs[name] = {"seconds": time.perf_counter() - t, "flows": res.flows}
    runs["in_process"]["peak_mb"] = round(peak_rss_mb(), 1)
    for w in (1, 2):
        runs[f"cluster_{w}"] = timed_cluster(files, w)
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
        import polars as pl

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

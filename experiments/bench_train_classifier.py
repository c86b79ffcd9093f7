"""Benchmark: the whole `flockwatch train classifier` command on IoT Sentinel, cached flows.

What a user waits for: the command's wall time from start to exit (imports, windows,
cross-validation, open-set runs, the final model, MLflow logging and registration), timed
around a fresh process. The flow cache (under a temporary FLOCKWATCH_HOME) is warmed by an
untimed read of every capture first. `--compare-with DIR` also times another checkout
of flockwatch (e.g. `git worktree add /tmp/base <commit>`) the same way, runs alternating,
so that on a busy machine the ratio still means something; `--quick` runs are timed too.

Usage:
    .venv/bin/python experiments/bench_train_classifier.py [--runs 1] [--compare-with DIR]
    .venv/bin/python experiments/bench_train_classifier.py --types Aria,HueBridge --per-type 4
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, arg_parser, report  # noqa: E402

PACKAGES = ("features", "datasets", "models", "training", "serving")


def _subset(src: Path, dest: Path, types: list[str], per_type: int | None) -> Path:
    """A labels.csv over some types' captures, pointing at the originals."""
    with (src / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["device_type"] in types]
    kept, count = [], dict.fromkeys(types, 0)
    for r in rows:
        count[r["device_type"]] += 1
        if per_type is None or count[r["device_type"]] <= per_type:
            kept.append({**r, "path": str(src / r["path"])})
    dest.mkdir(parents=True, exist_ok=True)
    with (dest / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    return dest


CLI = "import sys; from flockwatch.serving.cli import main; sys.argv[0] = 'flockwatch'; main()"
#: Reads (and caches) every capture's flows; the same call in every version of flockwatch.
WARM = ("import sys; from flockwatch.datasets.labelled import dataset_flows, load_dataset; "
        "dataset_flows(load_dataset(sys.argv[1]))")


def _env(checkout: Path | None, tmp: Path) -> dict[str, str]:
    """This checkout's flockwatch, or another one's (its folders mapped under the flockwatch
    name, ahead of the installed one)."""
    if checkout is None:
        return {}
    pkg = tmp / "compare-pkg" / "flockwatch"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").touch()
    for name in PACKAGES:
        link = pkg / name
        if not link.exists():
            link.symlink_to(checkout.resolve() / name)
    return {"PYTHONPATH": str(pkg.parent)}


def _run(code: str, env: dict[str, str], args: list[str], home: Path) -> float:
    full_env = {**os.environ, **env, "FLOCKWATCH_HOME": str(home),
                "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=full_env,
                          capture_output=True, text=True, cwd=home)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--runs", type=int, default=1, help="timed full runs per variant")
    ap.add_argument("--compare-with", type=Path, help="another checkout to time the same way")
    ap.add_argument("--types", help="comma-separated device types (default: all)")
    ap.add_argument("--per-type", type=int, help="captures per type (default: all)")
    args = ap.parse_args()
    root = Path(args.data) / "iot-sentinel"
    if not (root / "labels.csv").exists():
        print(f"skipped: no IoT Sentinel captures at {root} (set FLOCKWATCH_DATA)")
        return 0
    if args.compare_with and not (args.compare_with / "training").is_dir():
        raise SystemExit(f"{args.compare_with}: not a flockwatch checkout")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ds = root
        if args.types or args.per_type:
            types = args.types.split(",") if args.types else sorted(
                {r["device_type"] for r in csv.DictReader((root / "labels.csv").open())})
            ds = _subset(root, tmp / "ds", types, args.per_type)
        variants = {"this": _env(None, tmp)}
        if args.compare_with:
            variants["compare"] = _env(args.compare_with, tmp)
        homes = {name: tmp / f"home-{name}" for name in variants}
        for name, env in variants.items():  # warm each variant's flow cache, untimed
            homes[name].mkdir()
            _run(WARM, env, [str(ds)], homes[name])
        times: dict[str, dict[str, list[float]]] = {n: {"full": [], "quick": []}
                                                    for n in variants}
        train = ["train", "classifier", str(ds)]
        for _ in range(args.runs):
            for name, env in variants.items():
                times[name]["full"].append(_run(CLI, env, train, homes[name]))
            # --quick, this checkout only (an older one may not have it)
            times["this"]["quick"].append(_run(CLI, {}, [*train, "--quick"], homes["this"]))
    med = {n: {m: round(statistics.median(v), 1) for m, v in t.items() if v}
           for n, t in times.items()}
    res: dict[str, object] = {
        "dataset": str(ds if ds == root else f"{root} ({args.types or 'all'} types, "
                       f"{args.per_type or 'all'} per type)"),
        "runs": args.runs, "seconds": times, "median_seconds": med,
        "full_seconds": med["this"]["full"], "quick_seconds": med["this"].get("quick"),
        "target_seconds": 90, "cpus": os.cpu_count(),
        "load_average_at_end": list(os.getloadavg()),
    }
    if args.compare_with:
        res["compare_with"] = str(args.compare_with)
        res["compare_full_seconds"] = med["compare"]["full"]
        res["ratio_full"] = round(med["this"]["full"] / med["compare"]["full"], 3)
    report("bench_train_classifier", res, args.output,
           params={"runs": args.runs, "compare_with": str(args.compare_with or ""),
                   "repo": str(REPO)},
           metrics={"full_seconds": med["this"]["full"],
                    "quick_seconds": med["this"].get("quick", float("nan")),
                    **({"ratio_full": res["ratio_full"]} if args.compare_with else {})})
    return 0


if __name__ == "__main__":
    sys.exit(main())

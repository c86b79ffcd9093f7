"""Benchmark: training behavioural baselines for 20 devices x 7 days of 300 s windows.

Windows come from a synthetic-site capture (real NFStream features), resampled per device with
small noise to 7 days (2,016 windows each) and widened to 20 devices; the timed part is
`BaselineAutoencoder().fit` with its defaults (target: under 2 minutes on 2 CPU cores).

Usage: .venv/bin/python experiments/bench_baseline_train.py [--devices 20] [--days 7]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

from flockwatch.datasets.synth import synthesize_capture  # noqa: E402
from flockwatch.features import FEATURE_COLUMNS, WindowSpec, extract, windows  # noqa: E402
from flockwatch.models import BaselineAutoencoder  # noqa: E402


def main() -> int:
    ap = arg_parser(__doc__, data=False)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--days", type=float, default=7.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cap = synthesize_capture(Path(tmp) / "site.pcap", hours=3.0, seed=5)
        base = windows(extract([cap.path]).flows, WindowSpec(300))
    rng = np.random.default_rng(0)
    per_device = int(args.days * 86400 / 300)
    devices = base["device_id"].unique().sort().to_list()
    frames = []
    for k in range(args.devices):
        src = base.filter(pl.col("device_id") == devices[k % len(devices)])
        idx = rng.integers(0, src.height, per_device)
        X = src.select(FEATURE_COLUMNS).to_numpy()[idx]
        X = X + rng.normal(0, 0.01, X.shape) * (X != 0)
        t0 = np.datetime64("2026-03-02T00:00:00", "ms")
        frames.append(pl.DataFrame(X, schema=FEATURE_COLUMNS).with_columns(
            pl.lit(f"device-{k:02d}").alias("device_id"),
            pl.Series("start", t0 + np.arange(per_device) * np.timedelta64(300, "s"))
            .dt.replace_time_zone("UTC"),
        ))
    win = pl.concat(frames)
    t = time.perf_counter()
    model = BaselineAutoencoder().fit(win)
    fit_s = time.perf_counter() - t
    res = {"devices": args.devices, "days": args.days, "windows": win.height,
           "features": len(FEATURE_COLUMNS), "epochs": model.epochs,
           "fit_seconds": round(fit_s, 1), "target_seconds": 120}
    report("bench_baseline_train", res, args.output, params={"devices": args.devices,
                                                              "days": args.days},
           metrics={"fit_seconds": fit_s, "windows": win.height})
    return 0


if __name__ == "__main__":
    sys.exit(main())

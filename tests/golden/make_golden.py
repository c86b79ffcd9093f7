"""Regenerate the golden files (``make golden``): a small capture written by the project's own
site generator, and what flockwatch reads from it (flow table, window features, inventory,
product evidence). ``tests/test_golden_files.py`` compares a fresh reading with these files,
so a change to extraction or to a feature's formula cannot pass unnoticed: bump
``FEATURE_SET_VERSION`` (features) or ``EXTRACTION_VERSION`` (flows) in features/schema.py and
features/windows.py, then run ``make golden`` and commit the files with the change.

Usage: .venv/bin/python tests/golden/make_golden.py [--capture-too]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
CAPTURE = HERE / "site.pcap"
#: The generator's settings (seed 0, 72 s of the synthetic IoT/OT site, no attacks): the
#: capture is committed, so the golden files do not depend on the generator staying the same.
HOURS, SEED = 0.02, 0
WINDOW_S = 60.0


def read(capture: Path = CAPTURE) -> dict[str, object]:
    """What flockwatch reads from the golden capture, in a stable, path-independent form."""
    from flockwatch.features.evidence import device_evidence
    from flockwatch.features.flows import read_capture
    from flockwatch.features.inventory import inventory
    from flockwatch.features.windows import WindowSpec, windows

    flows, problems = read_capture(capture)
    if problems:
        raise SystemExit(f"{capture}: {problems}")
    flows = flows.with_columns(pl.lit(capture.name).alias("source"))
    keys = ["first_seen", "src_ip", "src_port", "dst_ip", "dst_port", "protocol", "last_seen"]
    flows = flows.sort(keys)
    win = windows(flows, WindowSpec(WINDOW_S)).sort("device_id", "start")
    inv = inventory(flows).sort("device_id")
    ev = device_evidence(flows).sort("device_id")
    return {"flows": flows, "windows": win, "inventory": inv, "evidence": ev}


def versions() -> dict[str, int]:
    from flockwatch.features.schema import EXTRACTION_VERSION
    from flockwatch.features.windows import FEATURE_SET_VERSION

    return {"EXTRACTION_VERSION": EXTRACTION_VERSION, "FEATURE_SET_VERSION": FEATURE_SET_VERSION}


def to_jsonable(df: pl.DataFrame) -> list[dict[str, object]]:
    out = df.with_columns(pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                          for c, t in df.schema.items() if isinstance(t, pl.Datetime))
    return [dict(r) for r in out.iter_rows(named=True)]


def write(parts: dict[str, object]) -> None:
    for name, df in parts.items():
        assert isinstance(df, pl.DataFrame)
        (HERE / f"site.{name}.json").write_text(
            json.dumps(to_jsonable(df), indent=0, sort_keys=True) + "\n")
    (HERE / "versions.json").write_text(json.dumps(versions(), indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture-too", action="store_true",
                    help="also rewrite site.pcap with the generator (seed 0)")
    args = ap.parse_args()
    if args.capture_too or not CAPTURE.exists():
        from flockwatch.datasets.synth import synthesize_capture

        synthesize_capture(CAPTURE, hours=HOURS, seed=SEED)
    write(read())
    print(f"golden files written under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

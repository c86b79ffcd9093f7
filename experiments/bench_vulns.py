"""Known-vulnerability database: import time and peak memory of a generated NVD feed, against
``json.load`` of the same file, and matching speed.

A feed of ``--cves`` CVEs shaped like a yearly NVD CVE JSON 2.0 feed (tests/nvdfeed.py:
~300-character descriptions, one to three CVSS metrics, one to six cpeMatch ranges, one CVE in
five with an AND configuration) is written to a temporary folder. Each measured step runs in a
fresh process whose peak resident memory (``ru_maxrss``) the kernel reports: the bare
interpreter with flockwatch's imports (the baseline), ``json.load`` of the feed alone, and
``flockwatch.serving.vulns.update`` of it. Then ``match`` of ``--software`` software rows.
Timings on a shared machine are indicative; the memory figures are not timing-sensitive.

Usage: .venv/bin/python experiments/bench_vulns.py [--cves 50000] [--software 1000]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import arg_parser, report  # noqa: E402

_PRELUDE = "import polars, flockwatch.serving.vulns as v, json, sys, time\n"


def _child(code: str) -> tuple[float, float, str]:
    """Run ``code`` in a fresh interpreter: (its peak RSS in MB, seconds, its stdout less
    the last line). The peak is the child's own ``VmHWM``, read by the child at its end:
    ``ru_maxrss`` would count the parent's pages that the child shared between fork and
    exec."""
    hwm = ("\nprint(next(int(x.split()[1]) for x in open('/proc/self/status') "
           "if x.startswith('VmHWM')))")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + code + hwm], capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}): {proc.stderr[-500:]}")
    *out, peak = proc.stdout.splitlines()
    return int(peak) / 1024, time.perf_counter() - start, "\n".join(out)


def main() -> int:
    ap = arg_parser(__doc__, data=False)
    ap.add_argument("--cves", type=int, default=50_000)
    ap.add_argument("--software", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flockwatch-vulns-") as tmp:
        feed = Path(tmp) / "nvdcve-2.0-synthetic.json"
        tests = str(Path(__file__).resolve().parents[1] / "tests")
        _child(f"sys.path.insert(0, {tests!r}); from nvdfeed import synthetic_feed; "
               f"open({str(feed)!r}, 'w').write(json.dumps(synthetic_feed({args.cves}), "
               "indent=2))")
        db = Path(tmp) / "vulns.sqlite"
        base_mb, base_s, _ = _child("pass")
        load_mb, load_s, _ = _child(f"t=time.perf_counter(); d=json.load(open({str(feed)!r}));"
                                    "print(time.perf_counter()-t)")
        imp_mb, imp_s, imp_out = _child(
            f"t=time.perf_counter(); s=v.update([{str(feed)!r}], db={str(db)!r});"
            "print(time.perf_counter()-t); print(json.dumps(s.to_dict()))")
        import_s = float(imp_out.splitlines()[0])
        summary = json.loads(imp_out.splitlines()[1])
        import polars as pl

        from flockwatch.serving.vulns import match

        n = args.software
        sw = pl.DataFrame({"device_id": [f"dev{i % (n // 3 + 1)}" for i in range(n)],
                           "vendor": [f"vendor{(i * 7) % 2000 % 400}" for i in range(n)],
                           "product": [f"product{(i * 7) % 2000}" for i in range(n)],
                           "version": [f"{i % 12}.{i % 10}" for i in range(n)],
                           "cpe": [None] * n}, schema_overrides={"cpe": pl.String})
        t = time.perf_counter()
        found = match(sw, db)
        match_s = time.perf_counter() - t
        results: dict[str, Any] = {
            "cves": args.cves, "feed_mb": round(feed.stat().st_size / 2**20, 1),
            "cpe_rows": summary["cpe_rows"], "db_mb": round(db.stat().st_size / 2**20, 1),
            "baseline_rss_mb": round(base_mb, 1),
            "json_load_rss_mb": round(load_mb, 1), "json_load_s": round(load_s, 1),
            "import_rss_mb": round(imp_mb, 1), "import_s": round(import_s, 1),
            "import_rss_over_baseline_mb": round(imp_mb - base_mb, 1),
            "json_load_rss_over_baseline_mb": round(load_mb - base_mb, 1),
            "software_rows": n, "matches": found.height, "match_s": round(match_s, 3),
            "note": "2-core machine shared with other jobs: timings indicative",
        }
        del base_s
    report("bench_vulns", results, args.output, params={"cves": args.cves, "software": n},
           metrics={k: v for k, v in results.items() if isinstance(v, (int, float))})
    return 0


if __name__ == "__main__":
    sys.exit(main())

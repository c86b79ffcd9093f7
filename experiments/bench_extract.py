"""Benchmark: `flockwatch extract` to Parquet vs bare `NFStreamer(...).to_pandas()`.

Also times `extract` with the payload pass (``features.payload``: payload inspection and the
announcements of ``features.announce``, one walk) off, and that pass alone, so its cost is a
ratio measured in the same run (``payload_pass_overhead``).

Builds a capture of at least 500k packets from the shared captures (Ethernet pcaps from
iot-sentinel, long-term-iot and modbus-scada, repeated with shifted timestamps so flows do not
merge), then times both on the same file in the same run, each in a fresh process, alternating,
and prints packets/s, peak memory (process + its NFStream metering children) and the ratios.

Usage: .venv/bin/python experiments/bench_extract.py [--packets 500000] [--repeats 3]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

from flockwatch.datasets.pcap import read_pcap  # noqa: E402
from flockwatch.features.pcapfile import PcapStream  # noqa: E402

BARE = """
import resource, sys, time, nfstream
t = time.perf_counter()
s = nfstream.NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=20)
df = s.to_pandas()
dt = time.perf_counter() - t
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(dt, me + kids, len(df))
"""
OURS = """
import resource, sys, time
from flockwatch.features.flows import extract
from flockwatch.features.output import write_parquet
t = time.perf_counter()
r = extract([sys.argv[1]])
write_parquet(r.flows, sys.argv[2])
dt = time.perf_counter() - t
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(dt, me + kids, r.flows.height)
"""
# The same, with read_capture's payload pass off (extract passes no such option on).
NO_PASS = OURS.replace("from flockwatch.features.output", """import functools
import flockwatch.features.flows as ff
ff.read_capture = functools.partial(ff.read_capture, announcements=False, payload=False)
from flockwatch.features.output""")
PASS = """
import sys, time
from flockwatch.features.payload import scan_capture
t = time.perf_counter()
s = scan_capture(sys.argv[1])
print(time.perf_counter() - t, 0, s.segments.height + s.announcements.height)
"""


def ethernet_packets(path: Path) -> list[tuple[float, bytes]]:
    try:
        linktype, packets = read_pcap(path)
    except ValueError:
        return []
    return packets if linktype == 1 else []


def build_capture(data: Path, target: int, dest: Path) -> int:
    sources = sorted((data / "iot-sentinel").rglob("*.pcap")) + sorted(
        (data / "long-term-iot").rglob("*.pcap")) + sorted((data / "modbus-scada").glob("*.pcap"))
    packets: list[tuple[float, bytes]] = []
    for p in sources:
        pk = ethernet_packets(p)
        if pk:
            packets.extend(pk)
    if not packets:
        raise SystemExit(f"no Ethernet pcaps under {data}")
    packets.sort(key=lambda x: x[0])
    span = packets[-1][0] - packets[0][0] + 3600
    n = 0
    with dest.open("wb") as fh, PcapStream(fh) as out:
        rep = 0
        while n < target:
            shift = rep * span
            for ts, frame in packets:
                out.write(ts + shift, frame)
            n += len(packets)
            rep += 1
    return n


def run(code: str, *args: str) -> tuple[float, int, int]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, cwd=tempfile.gettempdir())
    dt, rss, rows = out.stdout.strip().splitlines()[-1].split()
    return float(dt), int(rss), int(rows)


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--packets", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"skipped: no shared captures at {data}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        cap = Path(tmp) / "bench.pcap"
        n = build_capture(data, args.packets, cap)
        print(f"capture: {n:,} packets, {cap.stat().st_size / 1e6:.0f} MB")
        bare, ours, plain, alone = [], [], [], []
        for _ in range(args.repeats):
            bare.append(run(BARE, str(cap)))
            ours.append(run(OURS, str(cap), str(Path(tmp) / "flows.parquet")))
            plain.append(run(NO_PASS, str(cap), str(Path(tmp) / "flows.parquet")))
            alone.append(run(PASS, str(cap)))
        b_t = min(x[0] for x in bare)
        o_t = min(x[0] for x in ours)
        p_t = min(x[0] for x in plain)
        a_t = min(x[0] for x in alone)
        b_m = max(x[1] for x in bare)
        o_m = max(x[1] for x in ours)
        res = {
            "packets": n, "flows_bare": bare[0][2], "flows_ours": ours[0][2],
            "bare_pps": round(n / b_t), "ours_pps": round(n / o_t),
            "throughput_ratio": round(b_t / o_t, 3),
            "bare_peak_mb": round(b_m / 1024), "ours_peak_mb": round(o_m / 1024),
            "memory_ratio": round(o_m / b_m, 3),
            # wall time with the payload pass over without (it runs beside NFStream's meter,
            # so spare cores hide it), and the pass alone over extract without it
            "payload_pass_overhead": round(o_t / p_t, 3),
            "ours_without_pass_peak_mb": round(max(x[1] for x in plain) / 1024),
            "payload_pass_share": round(a_t / p_t, 3),
            "payload_pass_pps": round(n / a_t),
            "runs_seconds": {"bare": [round(x[0], 2) for x in bare],
                             "ours": [round(x[0], 2) for x in ours],
                             "ours_without_pass": [round(x[0], 2) for x in plain],
                             "payload_pass_alone": [round(x[0], 2) for x in alone]},
        }
    print(f"throughput ratio (ours/bare) {res['throughput_ratio']} (target >= 0.9); "
          f"peak memory ratio {res['memory_ratio']} (target <= 1.5); payload pass: "
          f"{res['payload_pass_overhead']} x the time without it (target <= 1.1), the pass "
          f"alone {res['payload_pass_share']} of it")
    report("bench_extract", res, args.output, params={"packets": n, "repeats": args.repeats},
           metrics={k: v for k, v in res.items() if isinstance(v, (int, float))})
    return 0


if __name__ == "__main__":
    sys.exit(main())

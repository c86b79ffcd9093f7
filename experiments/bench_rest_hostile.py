"""Benchmark: `flockwatch serve` under hostile clients, on loopback only.

Starts `flockwatch serve` (its own process) on 127.0.0.1 and measures valid requests of 100
flows, each on a new connection:

1. quiet: nothing else talks to the server (the baseline p50/p99, measured in the same run);
2. hostile: meanwhile a separate attacker process holds ``--half-open`` (64) half-open
   connections (half stop inside the request headers, half send headers announcing a body
   and then only part of it; each trickles a byte every 2 s so a per-read timeout alone
   never fires, and is reopened when the server drops it) and ``--hostile-clients`` (2)
   loops send hostile bodies back to back: JSON nested 100,000 deep, NaN, Infinity, 1e400,
   2**63, lists and objects in columns, empty and malformed CSV, invalid UTF-8, random
   bytes, and bodies over the size limit sent whole before the response is read.

Reported: quiet and hostile p50/p99 and their ratio (target: hostile p99 <= 2x quiet p99),
valid requests reset or refused (target 0), the hostile requests' answers (any dropped
without a response is a failure), how often the server cut a half-open connection (its read
timeout at work) and the tracebacks in the server's log (target 0).

The two phases alternate ``--rounds`` (3) times, so drifting load on a shared machine weighs
on both. The attacker stops by itself after ``--max-seconds`` even if this script dies; every
loop is bounded. On a shared machine the absolute figures move with the load; the ratio is measured
within one run.

Usage: .venv/bin/python experiments/bench_rest_hostile.py [--requests 300] [--model DIR]
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import arg_parser, report  # noqa: E402

MAX_MB = 1.0  # the server's --max-request-mb here: over-limit bodies stay cheap to send


def _records() -> list[dict[str, object]]:
    return [{"first_seen": "2026-01-01T00:00:00.000Z", "src_ip": "10.0.0.2",
             "dst_ip": "10.0.0.3", "packets": 3, "bytes": 300, "src_port": 5000,
             "dst_port": 53, "protocol": 17}]


def hostile_bodies() -> list[tuple[str, bytes, str]]:
    """(name, body, content type): every class of body the fuzz campaign of issue 18 sent."""
    base = _records()[0]

    def rec(**kw: object) -> bytes:
        return json.dumps([{**base, **kw}]).encode()

    def raw(field: str, literal: str) -> bytes:
        return json.dumps([base]).replace(f'"{field}": {json.dumps(base[field])}',
                                          f'"{field}": {literal}').encode()

    big = b"[" + b",".join([json.dumps(base).encode()] * int(MAX_MB * 1024 * 1024 / 150 + 100))
    return [
        ("nested", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("nested_object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
        ("nan", raw("packets", "NaN"), "application/json"),
        ("infinity", raw("bytes", "Infinity"), "application/json"),
        ("1e400", raw("bytes", "1e400"), "application/json"),
        ("2**63", raw("packets", str(2**63)), "application/json"),
        ("list_in_column", rec(src_ip=["10.0.0.1", "10.0.0.2"]), "application/json"),
        ("object_for_number", rec(packets={"x": 1}), "application/json"),
        ("bool_for_number", rec(bytes=True), "application/json"),
        ("huge_digits", raw("packets", "9" * 5000), "application/json"),
        ("empty_csv", b"", "text/csv"),
        ("malformed_csv", b'first_seen,src_ip\n"unterminated\n1,2,3\n', "text/csv"),
        ("csv_nan", b"first_seen,src_ip,dst_ip,packets,bytes\n0,a,b,nan,1\n", "text/csv"),
        ("bad_utf8", b'[{"src_ip": "\xff\xfe"}]', "application/json"),
        ("random_bytes", bytes(random.Random(7).randrange(256) for _ in range(4096)),
         "application/json"),
        ("not_records", b'{"foo": 1}', "application/json"),
        ("over_limit", big + b"]", "application/json"),
    ]


ATTACKER = r'''
import json, socket, sys, threading, time, http.client
port, n_half, n_clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
max_s = float(sys.argv[4])
sys.path.insert(0, sys.argv[5])
from bench_rest_hostile import hostile_bodies
bodies = hostile_bodies()
deadline = time.monotonic() + max_s
stop = threading.Event()
cut = [0]
answers = {}
lock = threading.Lock()

def half_open(k):
    """Keep one half-open connection: reopened whenever the server drops it."""
    partial = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Le" if k % 2 == 0 else
               b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 50000\r\n\r\n[{\"src_ip\": \"")
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(partial)
            while not stop.is_set() and time.monotonic() < deadline:
                stop.wait(2.0)
                s.sendall(b"a")  # a byte every 2 s: no per-read timeout ever fires
        except OSError:
            with lock:
                cut[0] += 1
            stop.wait(0.05)
        finally:
            try:
                s.close()
            except Exception:
                pass

def hostile(k):
    i = k
    while not stop.is_set() and time.monotonic() < deadline:
        name, body, ctype = bodies[i % len(bodies)]
        i += 1
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/invocations", body, {"Content-Type": ctype})
            r = c.getresponse()
            r.read()
            outcome = str(r.status)
            c.close()
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            outcome = "dropped"
        except OSError as exc:
            outcome = type(exc).__name__
        with lock:
            answers.setdefault(name, {}).setdefault(outcome, 0)
            answers[name][outcome] += 1

threads = [threading.Thread(target=half_open, args=(k,), daemon=True) for k in range(n_half)]
threads += [threading.Thread(target=hostile, args=(k,), daemon=True) for k in range(n_clients)]
for t in threads:
    t.start()
time.sleep(3.0)  # every half-open connection is in place
print("ready", flush=True)
def wait_stdin():
    sys.stdin.read()  # the bench closes stdin when its valid requests are done
    stop.set()
threading.Thread(target=wait_stdin, daemon=True).start()
while not stop.is_set() and time.monotonic() < deadline:
    stop.wait(0.2)
stop.set()
for t in threads:
    t.join(timeout=10)
print(json.dumps({"half_open_cut_by_server": cut[0], "answers": answers}), flush=True)
'''


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def valid_request(port: int, body: bytes) -> tuple[float, str]:
    t = time.perf_counter()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        outcome = "ok" if r.status == 200 else f"status {r.status}"
    except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
        outcome = "reset"
    except ConnectionRefusedError:
        outcome = "refused"
    except OSError as exc:
        outcome = type(exc).__name__
    return time.perf_counter() - t, outcome


def measure(port: int, bodies: list[bytes], n: int) -> tuple[np.ndarray, Counter[str]]:
    lat, outcomes = [], Counter[str]()
    for i in range(n):
        dt, outcome = valid_request(port, bodies[i % len(bodies)])
        outcomes[outcome] += 1
        if outcome == "ok":
            lat.append(dt)
    return np.array(lat) * 1000, outcomes


def summary(lat_ms: np.ndarray) -> dict[str, float]:
    if not len(lat_ms):
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"p50_ms": round(float(np.median(lat_ms)), 1),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 1)}


def site_flows(tmp: Path, model: str | None) -> tuple[str, list[dict[str, object]]]:
    """A model folder (trained here unless given) and flow records to send."""
    from flockwatch.features import extract
    from flockwatch.features.output import frame_records

    if model is None:
        from bench_score import train_model

        model = str(train_model(tmp))
        cap = tmp / "site" / "learning.pcap"
    else:
        from flockwatch.datasets.synth import synthesize

        synthesize(tmp / "site", hours=1.0, learning_hours=1.0, seed=3, attacks=[])
        cap = tmp / "site" / "learning.pcap"
    return model, frame_records(extract([cap]).flows)


def main() -> int:
    ap = arg_parser(__doc__, data=False)
    ap.add_argument("--requests", type=int, default=300, help="valid requests per phase")
    ap.add_argument("--rounds", type=int, default=3,
                    help="quiet and hostile phases alternate this many times")
    ap.add_argument("--half-open", type=int, default=64)
    ap.add_argument("--hostile-clients", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="the attacker stops by itself after this long")
    ap.add_argument("--model", help="model folder (default: train one on a synthetic site)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model, records = site_flows(tmp, args.model)
        bodies = [json.dumps({"dataframe_records": records[s:s + 100]}).encode()
                  for s in range(0, len(records) - 100, 100)][:50]
        port = free_port()
        log = (tmp / "serve.log").open("w")
        flockwatch = str(Path(sys.executable).parent / "flockwatch")
        env = {**os.environ, "FLOCKWATCH_HOME": str(tmp / "home")}
        server = subprocess.Popen([flockwatch, "serve", "-m", model, "--port", str(port),
                                   "--max-request-mb", str(MAX_MB)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(600):
                try:
                    if valid_request(port, bodies[0])[1] == "ok":
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            measure(port, bodies, 20)  # warm-up
            # Quiet and hostile phases alternate, so a change in the machine's load during
            # the run weighs on both alike.
            quiet_parts, hostile_parts = [], []
            quiet_out, hostile_out = Counter[str](), Counter[str]()
            answers: dict[str, dict[str, int]] = {}
            cut, ready, hostile_s = 0, True, 0.0
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                lat, out = measure(port, bodies, per_round)
                quiet_parts.append(lat)
                quiet_out += out
                attacker = subprocess.Popen(
                    [sys.executable, "-c", ATTACKER, str(port), str(args.half_open),
                     str(args.hostile_clients), str(args.max_seconds),
                     str(Path(__file__).resolve().parent)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert attacker.stdout is not None and attacker.stdin is not None
                ready = ready and attacker.stdout.readline().strip() == "ready"
                t0 = time.monotonic()
                lat, out = measure(port, bodies, per_round)
                hostile_s += time.monotonic() - t0
                hostile_parts.append(lat)
                hostile_out += out
                attacker.stdin.close()
                attack = json.loads(attacker.stdout.read().strip().splitlines()[-1])
                attacker.wait(timeout=60)
                cut += attack["half_open_cut_by_server"]
                for name, counts in attack["answers"].items():
                    for outcome, n in counts.items():
                        slot = answers.setdefault(name, {})
                        slot[outcome] = slot.get(outcome, 0) + n
            quiet, hostile = np.concatenate(quiet_parts), np.concatenate(hostile_parts)
            n_valid = per_round * args.rounds
            alive = valid_request(port, bodies[0])[1] == "ok"
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
        text = (tmp / "serve.log").read_text(errors="replace")
    dropped = sum(v.get("dropped", 0) for v in answers.values())
    q, h = summary(quiet), summary(hostile)
    res = {
        "attacker_ready": ready,
        "quiet": {**q, "outcomes": dict(quiet_out)},
        "hostile": {**h, "outcomes": dict(hostile_out), "seconds": round(hostile_s, 1)},
        "p99_ratio": round(h["p99_ms"] / q["p99_ms"], 2) if q["p99_ms"] else None,
        "valid_failed_under_attack": n_valid - hostile_out["ok"],
        "valid_resets": hostile_out["reset"] + quiet_out["reset"],
        "hostile_requests": sum(sum(v.values()) for v in answers.values()),
        "hostile_dropped": dropped,
        "hostile_answers": answers,
        "half_open_cut_by_server": cut,
        "server_tracebacks": text.count("Traceback"),
        "server_alive_after": alive,
    }
    report("bench_rest_hostile", res, args.output,
           params={"requests": args.requests, "rounds": args.rounds,
                   "half_open": args.half_open,
                   "hostile_clients": args.hostile_clients},
           metrics={"quiet_p99_ms": q["p99_ms"], "hostile_p99_ms": h["p99_ms"],
                    "p99_ratio": res["p99_ratio"] or float("nan"),
                    "valid_resets": res["valid_resets"], "hostile_dropped": dropped,
                    "server_tracebacks": res["server_tracebacks"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())

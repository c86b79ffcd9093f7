"""Fuzz campaign: hostile inputs against flockwatch's parsers, counting crashes and silent losses.

Each target is a parser with a Hypothesis strategy of hostile inputs, a stored corpus (the
named inputs of issue 18, built deterministically) and a check. The corpus is replayed first,
then the strategy draws inputs until ``--inputs`` were tried. An input that makes the parser
raise anything but its one-line error is a crash; one that breaks the check (packets in =
packets in flows + packets reported skipped, rows in = rows kept + rows reported skipped, no
invalid value kept) is a silent loss. Prints inputs, crashes, losses and seconds per target
as JSON and logs an MLflow run (experiment "experiments"); with ``--save DIR`` every failing
input is written there to reproduce it. Stopped (SIGTERM, SIGINT), it reports what it tried.

To add a parser, add a ``Target`` to ``TARGETS``: a strategy, a check that raises
``AssertionError`` for a broken promise, and a corpus of named inputs.

Usage: .venv/bin/python experiments/fuzz.py [--targets capture,zeek,payload_http,ot_modbus,...]
       [--inputs 100000]
       [--quick] [--seed 0] [--save DIR]
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
import hostile  # noqa: E402
from common import arg_parser, report  # noqa: E402


@dataclass(frozen=True)
class Target:
    """A parser under fuzz: where its inputs come from and what each must satisfy."""

    strategy: Callable[[], Any]  # () -> a Hypothesis strategy of inputs
    check: Callable[[Any, Path], None]  # (input, scratch folder) -> raises for a failure
    corpus: dict[str, Callable[[], Any]]  # name -> () -> input
    #: input -> bytes to save for a failure (None: the repr is saved)
    dump: Callable[[Any], bytes] | None = None


TARGETS: dict[str, Target] = {
    "capture": Target(hostile.capture_cases, hostile.check_capture, hostile.CAPTURE_CORPUS,
                      lambda case: case.data),
    "zeek": Target(hostile.zeek_cases, hostile.check_zeek, hostile.ZEEK_CORPUS,
                   lambda case: case.data),
}


def _bytes_target(fn: Callable[[bytes], None]) -> Target:
    """A parser of what strangers send the REST server or the command line
    (``flockwatch.serving.fuzz_targets``): random bytes in, AssertionError for a defect."""
    from hypothesis import strategies as st

    return Target(lambda: st.binary(max_size=4096), lambda data, _folder: fn(data), {},
                  lambda data: data)


def _add_serving_targets() -> None:
    from flockwatch.serving.fuzz_targets import TARGETS as SERVING

    for name, fn in SERVING.items():
        TARGETS[name] = _bytes_target(fn)


_add_serving_targets()


def _add_ot_targets() -> None:
    """The industrial dissectors (features/ot.py), one target per protocol: packet
    sequences built from valid messages (tests/fuzz/ot_cases.py), run without the
    dissectors' safety net."""
    import ot_cases

    for name in ot_cases.TARGETS:
        TARGETS[name] = Target(functools.partial(ot_cases.cases, name), ot_cases.check(name),
                               ot_cases.corpus(name), _repr_bytes)


def _repr_bytes(case: Any) -> bytes:
    return repr(case).encode()


_add_ot_targets()


def _add_payload_targets() -> None:
    """The payload pass's parsers (``features.banners``, ``features.tls``) on near-valid and
    raw flows, the certificate parser, and the scan over hostile captures
    (``tests/fuzz/payload_fuzz.py``)."""
    import payload_fuzz as pf

    groups = {"payload_http": ("http",), "payload_banners": ("ssh", "ftp", "telnet"),
              "payload_tls": ("tls",), "payload_snmp": ("snmp",), "payload_mqtt": ("mqtt",),
              "payload_mail": ("pop3", "imap")}
    for name, dissectors in groups.items():
        TARGETS[name] = Target(functools.partial(pf.flow_cases, dissectors), pf.check_flow,
                               {k: v for k, v in pf.CORPUS.items()
                                if v().dissector in dissectors})
    TARGETS["payload_cert"] = Target(pf.certificate_cases, pf.check_certificate,
                                     {"sample": pf.sample_certificate}, lambda der: der)
    TARGETS["payload_scan"] = Target(pf.scan_cases, pf.check_scan, {},
                                     lambda case: case.data)


_add_payload_targets()


class _Stopped(Exception):
    """SIGTERM or SIGINT: end the campaign and report what it tried. (A KeyboardInterrupt
    would not do: NFStream takes it as the end of its own stream and goes on.)"""


_STOP: list[int] = []


def _stop(signum: int, _frame: Any) -> None:
    _STOP.append(signum)


def campaign(name: str, target: Target, inputs: int, seed: int, save: Path | None,
             progress_every: int = 1000) -> dict[str, Any]:
    """Replay the corpus, then draw until ``inputs`` inputs were tried in all."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    stats: dict[str, Any] = {"inputs": 0, "corpus": len(target.corpus), "crashes": 0,
                             "losses": 0, "failures": []}
    start = time.perf_counter()

    def one(case: Any, folder: Path) -> None:
        if _STOP:
            raise _Stopped
        stats["inputs"] += 1
        try:
            target.check(case, folder)
        except AssertionError as exc:
            stats["losses"] += 1
            _record(stats, name, "loss", str(exc), case, target, save)
        except Exception as exc:  # noqa: BLE001 - a crash is what is counted here
            stats["crashes"] += 1
            tb = traceback.format_exception(exc)
            _record(stats, name, "crash", "".join(tb[-3:]).strip(), case, target, save)
        if stats["inputs"] % progress_every == 0:
            print(f"{name}: {stats['inputs']} inputs, {stats['crashes']} crashes, "
                  f"{stats['losses']} losses, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)

    with (tempfile.TemporaryDirectory(prefix="flockwatch-fuzz-") as tmp,
          contextlib.suppress(_Stopped)):
        folder = Path(tmp)
        for build in target.corpus.values():
            one(build(), folder)
        left = max(inputs - stats["inputs"], 0)
        if left:
            # Generation only: nothing fails inside Hypothesis (failures are counted), so
            # there is nothing to shrink; the seed makes a run repeatable.
            @hseed(seed)
            @settings(max_examples=left, database=None, deadline=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(target.strategy())
            def run(case: Any) -> None:
                one(case, folder)

            run()
    if _STOP:
        stats["interrupted"] = True
    stats["seconds"] = round(time.perf_counter() - start, 1)
    stats["inputs_per_s"] = round(stats["inputs"] / max(stats["seconds"], 1e-9), 1)
    return stats


def _record(stats: dict[str, Any], target: str, kind: str, message: str, case: Any,
            spec: Target, save: Path | None) -> None:
    entry = {"kind": kind, "message": message[-2000:], "note": getattr(case, "note", "")}
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        path = save / f"{target}-{kind}-{stats['crashes'] + stats['losses']:05d}.bin"
        path.write_bytes(spec.dump(case) if spec.dump else repr(case).encode())
        path.with_suffix(".json").write_text(json.dumps({**entry, "input": repr(case)[:4000]}))
        entry["saved"] = str(path)
    if len(stats["failures"]) < 20:
        stats["failures"].append(entry)


def main() -> int:
    ap = arg_parser(__doc__, data=False)
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated targets of {', '.join(TARGETS)}")
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    ap.add_argument("--quick", action="store_true", help="200 inputs per target (CI)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="write every failing input into this folder")
    args = ap.parse_args()
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    inputs = 200 if args.quick else args.inputs
    save = Path(args.save) if args.save else None
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    results: dict[str, Any] = {"inputs_per_target": inputs, "seed": args.seed, "targets": {}}
    for name in names:
        results["targets"][name] = campaign(name, TARGETS[name], inputs, args.seed, save)
        if results["targets"][name].get("interrupted"):
            break
    results["crashes"] = sum(t["crashes"] for t in results["targets"].values())
    results["losses"] = sum(t["losses"] for t in results["targets"].values())
    metrics: dict[str, Any] = {"crashes": results["crashes"], "losses": results["losses"]}
    for name, t in results["targets"].items():
        metrics.update({f"{name}_{k}": t[k] for k in ("inputs", "crashes", "losses", "seconds")})
    report("fuzz", results, args.output,
           params={"targets": ",".join(names), "inputs_per_target": inputs, "seed": args.seed},
           metrics=metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())

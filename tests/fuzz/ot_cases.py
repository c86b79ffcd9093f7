"""Hostile industrial payloads for the OT dissectors (features/ot.py): per protocol, valid
messages to start from, a Hypothesis strategy of packet sequences (valid messages cut,
flipped, stretched, glued together, or random bytes) and a check that runs a dissector
without its safety net (``OTDissector.feed``) and holds its columns to their promises.

experiments/fuzz.py runs one target per protocol; tests/fuzz/test_fuzz_inputs.py runs the
corpus."""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from flockwatch.features.ot import (
    OT_COLUMNS,
    BACnetDissector,
    DNP3Dissector,
    ENIPDissector,
    IEC104Dissector,
    ModbusDissector,
    OTDissector,
    S7Dissector,
)

# A case: [(payload, to_server), ...] fed in order, 1 ms apart.
Case = list[tuple[bytes, bool]]


def _mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _dnp3(fc: int, obj: bytes = b"\x3c\x01\x06", iin: bytes = b"") -> bytes:
    user = bytes([0xC0, 0xC0, fc]) + iin + obj
    head = b"\x05\x64" + bytes([5 + len(user), 0xC4]) + struct.pack("<HH", 10, 1) + b"\0\0"
    return head + b"".join(user[i:i + 16] + b"\0\0" for i in range(0, len(user), 16))


def _tpkt(s7: bytes) -> bytes:
    body = b"\x02\xf0\x80" + s7
    return b"\x03\x00" + struct.pack("!H", len(body) + 4) + body


def _s7_job(params: bytes, data: bytes = b"", rosctr: int = 1) -> bytes:
    head = struct.pack("!BBHHHH", 0x32, rosctr, 0, 1, len(params), len(data))
    if rosctr in (2, 3):
        head += b"\x00\x00"
    return _tpkt(head + params + data)


_S7_READ_ITEM = bytes.fromhex("120a10020001000184000000")
_SZL_ENTRY = (struct.pack("!H", 7) + b" " * 20 + bytes.fromhex("00c0") + b"V" + bytes([3, 2, 7]))
_SZL = bytes.fromhex("ff09") + struct.pack("!HHHHH", 8 + len(_SZL_ENTRY), 0x11, 0, 28, 1) \
    + _SZL_ENTRY


def _enip(cmd: int, body: bytes, status: int = 0) -> bytes:
    return struct.pack("<HHIIQI", cmd, len(body), 1, status, 0, 0) + body


def _cpf(cip: bytes) -> bytes:
    return struct.pack("<IHH", 0, 0, 2) + struct.pack("<HH", 0, 0) + \
        struct.pack("<HH", 0xB2, len(cip)) + cip


_IDENTITY_ITEM = (struct.pack("<H", 1) + struct.pack("!HH", 2, 44818) + bytes(4) + bytes(8)
                  + struct.pack("<HHHBBHI", 1, 12, 65, 4, 3, 0, 1234)
                  + bytes([10]) + b"1756-ENBT/" + b"\x03")


def _iec104(type_id: int, cot: int = 6) -> bytes:
    asdu = bytes([type_id, 1, cot, 0]) + struct.pack("<H", 1) + b"\x01\x00\x00" + b"\x01"
    return b"\x68" + bytes([4 + len(asdu)]) + b"\x00\x00\x00\x00" + asdu


def _bvlc(apdu: bytes) -> bytes:
    npdu = b"\x01\x00" + apdu
    return b"\x81\x0a" + struct.pack("!H", 4 + len(npdu)) + npdu


_READ_PROPERTY_ACK = (b"\x30\x01\x0c" + b"\x0c" + struct.pack("!I", 8 << 22 | 1) + b"\x19\x79"
                      + b"\x3e" + b"\x75\x05\x00ACME" + b"\x3f")

SEEDS: dict[str, tuple[Callable[[], OTDissector], list[tuple[bytes, bool]]]] = {
    "ot_modbus": (ModbusDissector, [
        (_mbap(1, 1, struct.pack("!BHH", 3, 0, 10)), True),
        (_mbap(2, 1, struct.pack("!BHHB", 16, 100, 2, 4) + b"\0\1\0\2"), True),
        (_mbap(1, 1, b"\x83\x02"), False),
        (_mbap(3, 1, b"\x2b\x0e\x01\x01\x00\x00\x03\x00\x04ACME\x01\x02X1\x02\x041.00"), False),
        (_mbap(4, 1, b"\x08\x00\x01\x00\x00"), True),
        (_mbap(5, 1, b"\x5a\x00\x40"), True),
    ]),
    "ot_dnp3": (DNP3Dissector, [
        (_dnp3(1), True), (_dnp3(5, b"\x0c\x01\x28\x01\x00\x00\x00"), True),
        (_dnp3(13, b""), True), (_dnp3(129, b"", b"\x00\x01"), False),
    ]),
    "ot_s7comm": (S7Dissector, [
        (_s7_job(b"\xf0\x00\x00\x01\x00\x01\x01\xe0"), True),
        (_s7_job(b"\x04\x01" + _S7_READ_ITEM), True),
        (_s7_job(b"\x05\x01" + _S7_READ_ITEM, b"\x00\x04\x00\x08\x01"), True),
        (_s7_job(b"\x29\x00\x00\x00\x00\x00\x09P_PROGRAM"), True),
        (_s7_job(b"\x04\x01", b"\xff\x04\x00\x10\x00\x00", rosctr=3), False),
        (_s7_job(bytes.fromhex("000112081284010100000000"), _SZL, rosctr=7), False),
    ]),
    "ot_enip": (ENIPDissector, [
        (_enip(0x63, b""), True),
        (_enip(0x63, struct.pack("<HHH", 1, 0x0C, len(_IDENTITY_ITEM)) + _IDENTITY_ITEM), False),
        (_enip(0x6F, _cpf(b"\x4c\x03\x91\x04TAG1\x01\x00")), True),
        (_enip(0x6F, _cpf(b"\x0a\x02\x20\x02\x24\x01\x02\x00\x06\x00\x0c\x00"
                          b"\x0e\x02\x20\x01\x24\x01\x10\x02\x20\x01\x24\x01")), True),
        (_enip(0x6F, _cpf(b"\x52\x02\x20\x06\x24\x01\x0a\x0a\x06\x00"
                          b"\x07\x02\x20\x01\x24\x01")), True),
        (_enip(0x6F, _cpf(b"\xcc\x00\x05\x00")), False),
    ]),
    "ot_iec104": (IEC104Dissector, [
        (b"\x68\x04\x07\x00\x00\x00", True), (_iec104(45), True), (_iec104(100), True),
        (_iec104(45, 0x47), False), (_iec104(1, 3), False),
    ]),
    "ot_bacnet": (BACnetDissector, [
        (_bvlc(b"\x10\x00\xc4\x02\x00\x00\x01\x22\x05\xc4\x91\x00\x21\x2a"), False),
        (_bvlc(b"\x00\x05\x01\x0c\x0c\x02\x00\x00\x01\x19\x79"), True),
        (_bvlc(_READ_PROPERTY_ACK), False),
        (_bvlc(b"\x00\x05\x02\x0f\x0c\x00\x00\x00\x01\x19\x55\x3e\x44\x00\x00\x00\x00\x3f"),
         True),
        (_bvlc(b"\x10\x08"), True), (_bvlc(b"\x50\x01\x0f\x91\x02\x91\x20"), False),
    ]),
}


def random_case(target: str, seed: int) -> Case:
    """One case from a seed: up to 8 packets, each a valid message mutated (bytes flipped,
    cut, stretched), several glued into one segment, or random bytes; every other packet cut
    in two, as TCP may. Built with ``random.Random`` from one drawn integer: Hypothesis's own
    drawing of nested byte strings costs ~15 ms a case, this ~0.1 ms, and 100,000 inputs a
    protocol must run in minutes."""
    rnd = random.Random(seed)
    seeds = SEEDS[target][1]
    out: Case = []
    for i in range(rnd.randrange(9)):
        kind = rnd.random()
        if kind < 0.55:
            data, to_server = rnd.choice(seeds)
            b = bytearray(data)
            for _ in range(rnd.randrange(5)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            if rnd.random() < 0.4:
                b = b[:rnd.randrange(len(b) + 1)]
            b += rnd.randbytes(rnd.randrange(4) * rnd.randrange(5))
        elif kind < 0.8:
            picks = [rnd.choice(seeds) for _ in range(rnd.randrange(2, 5))]
            b, to_server = bytearray(b"".join(p[0] for p in picks)), picks[0][1]
        else:
            b, to_server = bytearray(rnd.randbytes(rnd.randrange(300))), rnd.random() < 0.5
        if i % 2 and len(b) > 2:
            cut = rnd.randrange(1, len(b))
            out += [(bytes(b[:cut]), to_server), (bytes(b[cut:]), to_server)]
        else:
            out.append((bytes(b), to_server))
    return out


def cases(target: str) -> st.SearchStrategy[Case]:
    """A Hypothesis strategy of cases (``random_case`` of a drawn seed)."""
    return st.integers(0, 2**63 - 1).map(lambda seed: random_case(target, seed))


_ENTRY = re.compile(r"^(modbus|enip|bacnet|s7)_identity=[^;\x00-\x1f\x7f-\x9f]*"
                    r";[^;\x00-\x1f\x7f-\x9f]*;[^;\x00-\x1f\x7f-\x9f]*$")
_COUNTS = ("ot_requests", "ot_reads", "ot_writes", "ot_program", "ot_diagnostics",
           "ot_exceptions", "ot_objects")


def check(target: str) -> Callable[[Any, Any], None]:
    factory = SEEDS[target][0]

    def run(case: Case, _folder: Any) -> None:
        d = factory()
        for i, (data, to_server) in enumerate(case):
            d.feed(1000 + i, data, to_server)  # no safety net: an exception is a crash
            assert all(len(b) <= 16 * 1024 for b in d._buf.values()), "buffer over 16 KiB"
        cols = d.columns()
        assert set(cols) == set(OT_COLUMNS), "columns other than OT_COLUMNS"
        if cols["ot_protocol"] is not None:
            for c in _COUNTS:
                assert isinstance(cols[c], int) and cols[c] >= 0, f"{c} {cols[c]!r}"
            parts = sum(cols[c] for c in ("ot_reads", "ot_writes", "ot_program",
                                          "ot_diagnostics"))
            assert parts <= cols["ot_requests"], "classes exceed requests"
            for line in (cols["ot_timeline"] or "").split("\n") if cols["ot_timeline"] else []:
                fields = line.split(" ")
                assert len(fields) == 11 and all(f for f in fields), f"timeline {line!r}"
                assert all(f.lstrip("-").isdigit() for f in fields[:8]), f"timeline {line!r}"
        for by_server, entry in d.entries():
            assert isinstance(by_server, bool)
            assert _ENTRY.match(entry), f"entry {entry!r}"

    return run


def corpus(target: str) -> dict[str, Callable[[], Case]]:
    """Named inputs: each seed alone, each seed byte by byte, each seed cut at every length
    up to 12 bytes (one packet each, in one case), all seeds in one segment, and huge length
    fields."""
    seeds = SEEDS[target][1]
    out: dict[str, Callable[[], Case]] = {}
    for i, (data, to_server) in enumerate(seeds):
        out[f"seed{i}"] = lambda d=data, s=to_server: [(d, s)]
        out[f"seed{i}_bytewise"] = lambda d=data, s=to_server: [(d[j:j + 1], s)
                                                                 for j in range(len(d))]
        out[f"seed{i}_cuts"] = lambda d=data, s=to_server: [(d[:k], s)
                                                            for k in range(min(len(d), 12))]
    out["all_glued"] = lambda: [(b"".join(d for d, _ in seeds), True),
                                (b"".join(d for d, _ in seeds), False)]
    out["huge_length_fields"] = lambda: [(b"\x00\x01\x00\x00\xff\xff" + b"\xff" * 64, True),
                                         (b"\x05\x64\xff" + b"\xff" * 300, True),
                                         (b"\x03\x00\xff\xff" + b"\x00" * 64, True),
                                         (b"\x68\xff" + b"\x00" * 300, True),
                                         (b"\x81\x0a\xff\xff" + b"\x01" * 64, True)]
    return out


TARGETS = tuple(SEEDS)

__all__ = ["SEEDS", "TARGETS", "cases", "check", "corpus"]

"""Industrial protocols at function level: what an industrial conversation does.

The payload pass (``features.payload``) feeds each flow on a registered port to a fresh
dissector from ``OT_DISSECTORS`` ((ip protocol, server port) -> factory), packet by packet in
capture order, and writes what the dissector returns into the flow columns ``OT_COLUMNS``
(appended to ``features.schema.FLOW_COLUMNS``) and, for the industrial identities
(``modbus_identity``, ``enip_identity``, ``bacnet_identity``, ``s7_identity``), into the
``payload`` column.

Protocols: Modbus/TCP (502), DNP3 (20000 TCP and UDP), S7comm (102, TPKT/COTP), EtherNet/IP
and CIP (44818 TCP and UDP), IEC 60870-5-104 (2404), BACnet/IP (47808 UDP). Each request is
put in one class: ``read``, ``write`` (changes a value or an output: Modbus 5/6/15/16/22/23,
DNP3 operate, S7 write var, CIP set attribute / write tag, IEC 104 commands, BACnet
WriteProperty), ``program`` (changes what the controller runs or whether it runs: downloads,
uploads, stop/start, restarts, file functions), ``diagnostic`` (identification, status,
counters, clock) or ``other``. docs/ot.md lists every code.

Timing: a polling connection lasts as long as NFStream's active timeout (30 min), so flow
totals would put all its operations in the flow's first window. ``ot_timeline`` keeps one
line per second with activity (the window layer, ``features.windows``, explodes it and puts
each second into the window it fell in)::

    <epoch s> <requests> <reads> <writes> <program> <diagnostic> <exceptions> <period ms>
    <functions> <units> <objects>

``period ms`` is the median gap between two requests for the same item (function, unit,
object) that ended in that second (-1: none); ``functions`` is ``code:count,...`` and
``units``/``objects`` are ``,``-separated (``-`` when empty).

Parsers never raise: a malformed or truncated message is skipped (the fuzz targets of
``experiments/fuzz.py`` feed them random bytes), and each direction buffers at most
``MAX_BUFFER`` bytes for messages split across segments.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import struct
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl

#: Bytes buffered per direction for a message split across segments.
MAX_BUFFER = 16 * 1024
#: Seconds of activity kept per flow (a flow lasts at most the 1800 s active timeout).
MAX_SECONDS = 3600
#: Distinct units and objects kept per second, and per flow.
MAX_PER_SECOND = 16
MAX_PER_FLOW = 256
#: Items whose last request time is kept, for the polling period.
MAX_ITEMS = 512
#: Longest identity field kept (characters).
MAX_FIELD = 64

CLASSES = ("read", "write", "program", "diagnostic", "other")
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}
PROTOCOLS = ("modbus", "dnp3", "s7comm", "enip", "iec104", "bacnet")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f;]")


def _field(raw: bytes | str) -> str:
    """An identity field: decoded, cleaned of control characters and ``;``, cut."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return _CONTROL.sub("", text).strip()[:MAX_FIELD]


class _Second:
    """What happened in one second of a flow."""

    __slots__ = ("classes", "exceptions", "functions", "gaps", "objects", "units")

    def __init__(self) -> None:
        self.classes = [0, 0, 0, 0, 0]
        self.exceptions = 0
        self.functions: dict[str, int] = {}
        self.gaps: list[int] = []
        self.units: set[str] = set()
        self.objects: set[str] = set()


class OTDissector:
    """The bookkeeping every industrial dissector shares: counts, classes, the per-second
    timeline, identity entries, and bounded per-direction buffers. Subclasses implement
    ``_parse(t_ms, data, to_server)`` on the bytes buffered so far and return how many bytes
    they consumed; anything they raise drops that direction's buffer (never the caller)."""

    protocol = ""
    cap: int | None = None
    #: stream protocols keep the bytes of a message split across segments
    stream = True

    def __init__(self, stream: bool | None = None) -> None:
        if stream is not None:  # a protocol carried over TCP and UDP: over UDP, False
            self.stream = stream
        self._buf = {True: bytearray(), False: bytearray()}
        self.requests = 0
        self.classes = [0, 0, 0, 0, 0]
        self.exceptions = 0
        self.functions: dict[str, int] = {}
        self.units: set[str] = set()
        self.objects: set[str] = set()
        self._seconds: dict[int, _Second] = {}
        self._cur_sec: int | None = None  # the second last counted, and its record
        self._cur: _Second | None = None
        self._last: dict[tuple[str, str, str], int] = {}
        self._entries: set[tuple[bool, str]] = set()
        #: whether any message of the protocol was recognised (else the columns are null)
        self.framed = False

    # -- the Dissector protocol -----------------------------------------------------------
    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        """Feed one packet's payload (never raises: a parser's failure drops that
        direction's buffered bytes)."""
        try:
            self.feed(t_ms, payload, to_server)
        except Exception:  # noqa: BLE001 -- a malformed payload must never reach the caller
            self._buf[to_server].clear()

    def feed(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        """``packet`` without its safety net: the fuzz targets call this, so that a parser's
        exception counts as a crash instead of vanishing."""
        if not payload:
            return
        if not self.stream:
            self._parse(t_ms, bytes(payload), to_server)
            return
        buf = self._buf[to_server]
        buf += payload
        used = self._parse(t_ms, bytes(buf), to_server)
        del buf[:used]
        if len(buf) > MAX_BUFFER:  # a message longer than any valid one: lost sync
            buf.clear()

    def entries(self) -> Iterable[tuple[bool, str]]:
        """(sent by the server, ``kind=value``): the industrial identities seen."""
        return sorted(self._entries)

    def columns(self) -> dict[str, object]:
        """The values of ``OT_COLUMNS`` for this flow: nulls when no message of the
        protocol was recognised (another protocol on the port, an ephemeral port that happens
        to be registered)."""
        if not (self.framed or self.requests or self.exceptions or self._entries):
            return dict.fromkeys(OT_COLUMNS)
        c = self.classes
        lines = []
        for sec in sorted(self._seconds):
            s = self._seconds[sec]
            gaps = sorted(s.gaps)
            period = gaps[len(gaps) // 2] if gaps else -1
            lines.append(" ".join([
                str(sec), str(sum(s.classes)), *map(str, s.classes[:4]), str(s.exceptions),
                str(period), _joined(f"{k}:{v}" for k, v in sorted(s.functions.items(),
                                                                  key=_code_order)),
                _joined(sorted(s.units)), _joined(sorted(s.objects)),
            ]))
        return {
            "ot_protocol": self.protocol,
            "ot_requests": self.requests,
            "ot_reads": c[0],
            "ot_writes": c[1],
            "ot_program": c[2],
            "ot_diagnostics": c[3],
            "ot_exceptions": self.exceptions,
            "ot_functions": ",".join(f"{k}:{v}" for k, v in
                                     sorted(self.functions.items(), key=_code_order)) or None,
            "ot_units": ",".join(sorted(self.units, key=_code_order_key)) or None,
            "ot_objects": len(self.objects),
            "ot_timeline": "\n".join(lines) or None,
        }

    # -- for subclasses -------------------------------------------------------------------
    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:  # pragma: no cover
        raise NotImplementedError

    def _second(self, t_ms: int) -> _Second | None:
        sec = t_ms // 1000
        if sec == self._cur_sec:
            return self._cur
        s = self._seconds.get(sec)
        if s is None:
            if len(self._seconds) >= MAX_SECONDS:
                return None
            s = self._seconds[sec] = _Second()
        self._cur_sec, self._cur = sec, s
        return s

    def request(self, t_ms: int, cls: str, function: int | str, unit: object = None,
                obj: object = None) -> None:
        """Count one request of class ``cls`` (``CLASSES``). Runs once per request of a
        polling capture: kept to dictionary and set operations."""
        k = _CLASS_INDEX[cls]
        fn = str(function)
        un, key = _unit_key(unit, obj)
        self.requests += 1
        self.classes[k] += 1
        f = self.functions
        f[fn] = f.get(fn, 0) + 1
        if un and len(self.units) < MAX_PER_FLOW:
            self.units.add(un)
        if key and len(self.objects) < MAX_PER_FLOW:
            self.objects.add(key)
        s = self._second(t_ms)
        if s is None:
            return
        s.classes[k] += 1
        f = s.functions
        f[fn] = f.get(fn, 0) + 1
        if un and len(s.units) < MAX_PER_SECOND:
            s.units.add(un)
        if key and len(s.objects) < MAX_PER_SECOND:
            s.objects.add(key)
        item = (fn, un, key)
        last = self._last.get(item)
        if last is not None:
            if t_ms > last:
                s.gaps.append(t_ms - last)
            self._last[item] = t_ms
        elif len(self._last) < MAX_ITEMS:
            self._last[item] = t_ms

    def exception(self, t_ms: int) -> None:
        """Count one exception (error) response."""
        self.exceptions += 1
        s = self._second(t_ms)
        if s is not None:
            s.exceptions += 1

    def identity(self, by_server: bool, kind: str, vendor: str, product: str,
                 version: str) -> None:
        if vendor or product or version:
            self._entries.add((by_server, f"{kind}={_field(vendor)};{_field(product)};"
                                          f"{_field(version)}"))


_NOT_TOKEN = re.compile(r"[^\w.:/-]")


def _token(text: str) -> str:
    """A unit or object name as the timeline can hold it: no spaces, commas or newlines."""
    return _NOT_TOKEN.sub("_", text)[:MAX_FIELD]


@functools.lru_cache(maxsize=4096)
def _unit_key(unit: object, obj: object) -> tuple[str, str]:
    """(unit, ``unit/object`` key) as the columns write them (a poll repeats the same few)."""
    un = "" if unit is None else _token(str(unit))
    return un, ("" if obj is None else f"{un}/{_token(str(obj))}")


def _joined(items: Iterable[str]) -> str:
    return ",".join(items) or "-"


def _code_order_key(k: str) -> tuple[int, int | str]:
    return (0, int(k)) if k.isdigit() else (1, k)


def _code_order(kv: tuple[str, int]) -> tuple[int, int | str]:
    return _code_order_key(kv[0])


_U16 = struct.Struct(">H").unpack_from
_U16LE = struct.Struct("<H").unpack_from
_U32LE = struct.Struct("<I").unpack_from


# -- Modbus/TCP ----------------------------------------------------------------------------
MODBUS_CLASSES: dict[int, str] = {
    1: "read", 2: "read", 3: "read", 4: "read", 20: "read", 24: "read",
    5: "write", 6: "write", 15: "write", 16: "write", 21: "write", 22: "write", 23: "write",
    7: "diagnostic", 8: "diagnostic", 11: "diagnostic", 12: "diagnostic", 17: "diagnostic",
    43: "diagnostic",
}
#: Modbus function -> register table of its start address (coils, discrete inputs,
#: holding registers, input registers).
_MODBUS_TABLE = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h",
                 4: "i"}
#: Diagnostics (8) sub-functions that restart the server's communications or silence it.
_MODBUS_RESTART = frozenset({1, 4})
#: Schneider UMAS (function 90) sub-functions that start/stop the PLC or move its program.
_UMAS_PROGRAM = frozenset({0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x40, 0x41})


class ModbusDissector(OTDissector):
    """Modbus/TCP: MBAP framing (several ADUs per segment, ADUs across segments), function
    code, unit ID, start address; exceptions (function | 0x80); Read Device Identification
    (43/14) answers as ``modbus_identity``."""

    protocol = "modbus"

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        off, n = 0, len(data)
        while n - off >= 7:
            proto, length = _U16(data, off + 2)[0], _U16(data, off + 4)[0]
            if proto != 0 or not 2 <= length <= 254:
                return n  # not Modbus (or lost sync): drop what is buffered
            end = off + 6 + length
            if end > n:
                break
            self.framed = True
            self._adu(t_ms, data[off + 6:end], to_server)
            off = end
        return off

    def _adu(self, t_ms: int, adu: bytes, to_server: bool) -> None:
        unit, fc, d = adu[0], adu[1], adu[2:]
        if not to_server:
            if fc & 0x80:
                self.exception(t_ms)
            elif fc == 43 and len(d) >= 6 and d[0] == 14:
                self._device_id(d)
            return
        if fc & 0x80:
            return
        cls = MODBUS_CLASSES.get(fc, "other")
        obj = None
        if fc in _MODBUS_TABLE and len(d) >= 2:
            obj = f"{_MODBUS_TABLE[fc]}{_U16(d, 0)[0]}"
        elif len(d) >= 2 and ((fc == 8 and _U16(d, 0)[0] in _MODBUS_RESTART)
                              or (fc == 90 and d[1] in _UMAS_PROGRAM)):
            cls = "program"
        self.request(t_ms, cls, fc, unit, obj)

    def _device_id(self, d: bytes) -> None:
        # MEI 14, read code, conformity, more follows, next object, count, then objects
        count, off = d[5], 6
        objs: dict[int, bytes] = {}
        for _ in range(count):
            if off + 2 > len(d):
                break
            oid, ln = d[off], d[off + 1]
            objs[oid] = d[off + 2:off + 2 + ln]
            off += 2 + ln
        product = objs.get(4) or objs.get(5) or objs.get(1) or b""
        self.identity(True, "modbus_identity", _field(objs.get(0, b"")), _field(product),
                      _field(objs.get(2, b"")))


# -- DNP3 ----------------------------------------------------------------------------------
DNP3_CLASSES: dict[int, str] = {
    1: "read",
    2: "write", 3: "write", 4: "write", 5: "write", 6: "write", 20: "write", 21: "write",
    22: "write",
    13: "program", 14: "program", 15: "program", 16: "program", 17: "program", 18: "program",
    19: "program", 25: "program", 26: "program", 27: "program", 28: "program", 29: "program",
    30: "program", 31: "program",
    23: "diagnostic", 24: "diagnostic",
}


class DNP3Dissector(OTDissector):
    """DNP3 over TCP or UDP: link frames (0x0564, CRC every 16 bytes), the transport header,
    the application function code of each request's first fragment, its destination (the
    outstation) and first object header; responses whose IIN2 reports an unsupported
    function, unknown object or bad parameter count as exceptions."""

    protocol = "dnp3"

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        off, n = 0, len(data)
        while n - off >= 10:
            if data[off] != 0x05 or data[off + 1] != 0x64:
                nxt = data.find(b"\x05\x64", off + 1)
                if nxt < 0:
                    return n - 1 if data[-1] == 0x05 else n
                off = nxt
                continue
            ln = data[off + 2]
            if ln < 5:
                off += 2
                continue
            size = ln - 5
            total = 10 + size + 2 * ((size + 15) // 16)
            if off + total > n:
                break
            self.framed = True
            dest = _U16LE(data, off + 4)[0]
            user = b"".join(data[off + 10 + i * 18:off + 10 + i * 18 + min(16, size - i * 16)]
                            for i in range((size + 15) // 16))
            self._user(t_ms, user, to_server, dest)
            off += total
        return off

    def _user(self, t_ms: int, user: bytes, to_server: bool, dest: int) -> None:
        if len(user) < 3 or not user[0] & 0x40:  # no application header in this fragment
            return
        fc = user[2]
        if fc >= 129:  # responses
            if len(user) >= 5 and user[4] & 0x07:
                self.exception(t_ms)
            return
        if not to_server or fc == 0:  # confirmations are no requests
            return
        obj = f"g{user[3]}v{user[4]}" if len(user) >= 5 else None
        self.request(t_ms, DNP3_CLASSES.get(fc, "other"), fc, dest, obj)


# -- S7comm --------------------------------------------------------------------------------
S7_CLASSES: dict[int, str] = {
    0x04: "read", 0x05: "write",
    0x1A: "program", 0x1B: "program", 0x1C: "program", 0x1D: "program", 0x1E: "program",
    0x1F: "program", 0x28: "program", 0x29: "program",
}


class S7Dissector(OTDissector):
    """S7comm over TPKT/COTP: job functions (read/write var, download/upload blocks, PI
    service, PLC stop), the items' area, DB and byte address, errors in acknowledgements, and
    the SZL module identification (0x0011) and component identification (0x001C) as
    ``s7_identity``."""

    protocol = "s7comm"

    def __init__(self) -> None:
        super().__init__()
        self._order = ""
        self._name = ""
        self._version = ""

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        off, n = 0, len(data)
        while n - off >= 4:
            if data[off] != 3 or data[off + 1] != 0:
                return n
            ln = _U16(data, off + 2)[0]
            if ln < 7:
                return n
            if off + ln > n:
                break
            self._tpkt(t_ms, data[off + 4:off + ln], to_server)
            off += ln
        return off

    def _tpkt(self, t_ms: int, cotp: bytes, to_server: bool) -> None:
        if len(cotp) < 3 or cotp[1] != 0xF0:  # only COTP data carries S7
            return
        s7 = cotp[cotp[0] + 1:]
        if len(s7) < 10 or s7[0] != 0x32:
            return
        self.framed = True
        rosctr = s7[1]
        plen, dlen = _U16(s7, 6)[0], _U16(s7, 8)[0]
        head = 12 if rosctr in (2, 3) else 10
        par, dat = s7[head:head + plen], s7[head + plen:head + plen + dlen]
        if rosctr == 1 and to_server and par:
            fc = par[0]
            obj = None
            if fc in (4, 5) and len(par) >= 14 and par[2] == 0x12:
                db, area = _U16(par, 8)[0], par[10]
                addr = (par[11] << 16 | par[12] << 8 | par[13]) >> 3
                obj = f"{area:02x}.{db}.{addr}"
            self.request(t_ms, S7_CLASSES.get(fc, "other"), fc, None, obj)
        elif rosctr in (2, 3) and not to_server:
            if len(s7) >= 12 and (s7[10] or s7[11]):
                self.exception(t_ms)
        elif rosctr == 7 and len(par) >= 8:
            kind, group, sub = par[5] >> 4, par[5] & 0x0F, par[6]
            if kind == 4 and to_server:  # a user-data request
                self.request(t_ms, "diagnostic", f"ud{group}.{sub}")
            elif kind == 8 and group == 4 and sub == 1 and not to_server:
                self._szl(dat)
            elif kind == 8 and len(par) >= 12 and _U16(par, 10)[0] and not to_server:
                self.exception(t_ms)

    def _szl(self, dat: bytes) -> None:
        if len(dat) < 12 or dat[0] != 0xFF:
            return
        szl_id, size, count = _U16(dat, 4)[0], _U16(dat, 8)[0], _U16(dat, 10)[0]
        off = 12
        for _ in range(count):
            e = dat[off:off + size]
            if len(e) < size or size < 4:
                break
            off += size
            index = _U16(e, 0)[0]
            if szl_id & 0xFF == 0x11 and size >= 28:
                if index == 1:
                    self._order = _field(e[2:22])
                elif index == 7 and e[24] == 0x56:  # firmware: type, 'V' major minor patch
                    self._version = f"{e[25]}.{e[26]}.{e[27]}"
            elif szl_id & 0xFF == 0x1C and index == 7:
                self._name = _field(e[2:34])
        self._entries = {x for x in self._entries if not x[1].startswith("s7_identity=")}
        product = (f"{self._name} ({self._order})" if self._name and self._order
                   else self._name or self._order)
        self.identity(True, "s7_identity", "Siemens" if product else "", product,
                      self._version)


# -- EtherNet/IP and CIP -------------------------------------------------------------------
CIP_CLASSES: dict[int, str] = {
    0x01: "read", 0x03: "read", 0x0E: "read", 0x4C: "read", 0x52: "read", 0x55: "read",
    0x02: "write", 0x04: "write", 0x10: "write", 0x4D: "write", 0x4E: "write", 0x53: "write",
    0x08: "write", 0x09: "write",
    0x05: "program", 0x06: "program", 0x07: "program",
}
#: CIP vendor IDs (ODVA) that name a vendor without doubt; others leave the vendor empty.
CIP_VENDORS = {1: "Rockwell Automation/Allen-Bradley", 5: "Rockwell Automation/Reliance"}
#: Connection Manager; File object and Non-Volatile Storage object (firmware updates), whose
#: object-specific services move programs and firmware.
_CIP_CM, _CIP_PROGRAM_CLASSES = 0x06, frozenset({0x37, 0xA1})


@functools.lru_cache(maxsize=4096)
def _cip_path(path: bytes) -> tuple[int | None, str]:
    """(class, object key) of a CIP request path (logical class/instance/attribute or an
    ANSI symbolic tag)."""
    cls: int | None = None
    parts: list[str] = []
    i = 0
    while i < len(path):
        seg = path[i]
        if seg in (0x20, 0x24, 0x28, 0x30) and i + 1 < len(path):
            v, i = path[i + 1], i + 2
        elif seg in (0x21, 0x25, 0x29, 0x31) and i + 3 < len(path):
            v, i = _U16LE(path, i + 2)[0], i + 4
        elif seg == 0x91 and i + 1 < len(path):
            ln = path[i + 1]
            parts.append("tag:" + _field(path[i + 2:i + 2 + ln]))
            i += 2 + ln + (ln & 1)
            continue
        else:
            break
        kind = {0x20: "c", 0x21: "c", 0x24: "i", 0x25: "i", 0x28: "m", 0x29: "m",
                0x30: "a", 0x31: "a"}[seg]
        if kind == "c":
            cls = v
        parts.append(f"{kind}{v}")
    return cls, ".".join(parts)


class ENIPDissector(OTDissector):
    """EtherNet/IP encapsulation (TCP or UDP): the List* discovery commands, ListIdentity
    replies as ``enip_identity``, and the CIP requests inside SendRRData/SendUnitData
    (through Unconnected Send and Multiple Service Packet); CIP error statuses count as
    exceptions."""

    protocol = "enip"

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        off, n = 0, len(data)
        while n - off >= 24:
            cmd, ln = _U16LE(data, off)[0], _U16LE(data, off + 2)[0]
            if cmd not in (0x01, 0x04, 0x63, 0x64, 0x65, 0x66, 0x6F, 0x70, 0x72, 0x73):
                return n
            if off + 24 + ln > n:
                break
            self.framed = True
            body = data[off + 24:off + 24 + ln]
            status = _U32LE(data, off + 8)[0]
            off += 24 + ln
            if cmd in (0x04, 0x63, 0x64):
                if to_server and not body:
                    self.request(t_ms, "diagnostic", f"enc{cmd}")
                elif cmd == 0x63 and body:
                    self._list_identity(body, to_server)
            elif cmd in (0x6F, 0x70):
                if status and not to_server:
                    self.exception(t_ms)
                else:
                    self._cpf(t_ms, body, to_server)
        return off

    def _cpf(self, t_ms: int, body: bytes, to_server: bool) -> None:
        if len(body) < 8:
            return
        count, off = _U16LE(body, 6)[0], 8
        for _ in range(min(count, 8)):
            if off + 4 > len(body):
                return
            typ, ln = _U16LE(body, off)[0], _U16LE(body, off + 2)[0]
            item = body[off + 4:off + 4 + ln]
            off += 4 + ln
            if typ == 0xB2:
                self._cip(t_ms, item, to_server, 0)
            elif typ == 0xB1 and len(item) > 2:  # connected: a sequence count first
                self._cip(t_ms, item[2:], to_server, 0)

    def _cip(self, t_ms: int, msg: bytes, to_server: bool, depth: int) -> None:
        if len(msg) < 2 or depth > 2:
            return
        service = msg[0]
        if service & 0x80:  # a reply
            if len(msg) >= 4 and msg[2] not in (0, 6) and not to_server:
                self.exception(t_ms)
            elif service == 0x8A and len(msg) >= 6:  # multiple service reply
                self._multiple(t_ms, msg[4:], to_server, depth)
            return
        if not to_server:
            return
        words = msg[1]
        path = msg[2:2 + 2 * words]
        data = msg[2 + 2 * words:]
        cls, obj = _cip_path(path)
        if cls == _CIP_CM and service == 0x52 and len(data) >= 4:  # Unconnected Send
            size = _U16LE(data, 2)[0]
            self._cip(t_ms, data[4:4 + size], to_server, depth + 1)
            return
        if service == 0x0A:  # Multiple Service Packet
            self._multiple(t_ms, data, to_server, depth)
            return
        if cls == _CIP_CM:
            kind = "other"  # Forward Open/Close: connection management
        elif cls in _CIP_PROGRAM_CLASSES and service >= 0x4B:
            kind = "program"
        else:
            kind = CIP_CLASSES.get(service, "other")
        self.request(t_ms, kind, service, None, obj or None)

    def _multiple(self, t_ms: int, data: bytes, to_server: bool, depth: int) -> None:
        if len(data) < 2:
            return
        count = _U16LE(data, 0)[0]
        offs = [_U16LE(data, 2 + 2 * i)[0] for i in range(min(count, 32))
                if 4 + 2 * i <= len(data)]
        for i, o in enumerate(offs):
            end = offs[i + 1] if i + 1 < len(offs) else len(data)
            self._cip(t_ms, data[o:end], to_server, depth + 1)

    def _list_identity(self, body: bytes, to_server: bool) -> None:
        if len(body) < 2:
            return
        count, off = _U16LE(body, 0)[0], 2
        for _ in range(min(count, 4)):
            if off + 4 > len(body):
                return
            typ, ln = _U16LE(body, off)[0], _U16LE(body, off + 2)[0]
            item = body[off + 4:off + 4 + ln]
            off += 4 + ln
            if typ != 0x0C or len(item) < 33:
                continue
            vendor_id = _U16LE(item, 18)[0]
            major, minor = item[24], item[25]
            name = item[33:33 + item[32]]
            self.identity(not to_server, "enip_identity", CIP_VENDORS.get(vendor_id, ""),
                          _field(name), f"{major}.{minor:03d}")


# -- IEC 60870-5-104 -----------------------------------------------------------------------
def _iec104_class(type_id: int) -> str:
    if 45 <= type_id <= 51 or 58 <= type_id <= 64 or 110 <= type_id <= 113:
        return "write"  # commands (C_SC .. C_BO, with time tag) and parameters (P_*)
    if type_id in (100, 101, 102):
        return "read"  # interrogation, counter interrogation, read command
    if type_id == 105:
        return "program"  # reset process
    if type_id in (103, 104, 106, 107):
        return "diagnostic"  # clock sync, test, delay acquisition
    return "other"


class IEC104Dissector(OTDissector):
    """IEC 60870-5-104: APCI frames (I, S, U), the ASDU type of each I-frame the controlling
    station sends, its common address (unit) and first information object address; a
    negative confirmation or an unknown type/cause/address in the other direction counts as
    an exception."""

    protocol = "iec104"

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        off, n = 0, len(data)
        while n - off >= 2:
            if data[off] != 0x68:
                return n
            ln = data[off + 1]
            if ln < 4:
                return n
            if off + 2 + ln > n:
                break
            apdu = data[off + 2:off + 2 + ln]
            off += 2 + ln
            self.framed = True
            if apdu[0] & 1 == 0 and len(apdu) >= 10:  # an I-frame with an ASDU
                self._asdu(t_ms, apdu[4:], to_server)
        return off

    def _asdu(self, t_ms: int, asdu: bytes, to_server: bool) -> None:
        type_id, cot = asdu[0], asdu[2]
        if not to_server:
            if cot & 0x40 or 44 <= cot & 0x3F <= 47:
                self.exception(t_ms)
            return
        if cot & 0x40:
            return
        ca = _U16LE(asdu, 4)[0]
        ioa = asdu[6] | asdu[7] << 8 | asdu[8] << 16 if len(asdu) >= 9 else None
        self.request(t_ms, _iec104_class(type_id), type_id, ca, ioa)


# -- BACnet/IP -----------------------------------------------------------------------------
BACNET_CONFIRMED: dict[int, str] = {
    12: "read", 14: "read", 26: "read", 6: "read",
    15: "write", 16: "write", 8: "write", 9: "write", 10: "write", 11: "write",
    7: "program", 17: "program", 20: "program",
}
BACNET_UNCONFIRMED: dict[int, str] = {6: "diagnostic", 7: "diagnostic", 8: "diagnostic",
                                      9: "diagnostic"}
#: Offset of unconfirmed service choices in ``ot_functions`` (confirmed ones are plain).
BACNET_UNCONFIRMED_BASE = 256
_BACNET_DEVICE = 8
_BACNET_PROPS = {121: "vendor", 70: "model", 44: "firmware", 12: "software"}


def _bacnet_tag(b: bytes, i: int) -> tuple[int, bool, int, int] | None:
    """(tag number, context?, value length or 6/7 for opening/closing, value offset); None
    where the tag runs past the end."""
    if i >= len(b):
        return None
    t = b[i]
    num, ctx, lvt = t >> 4, bool(t & 0x08), t & 0x07
    i += 1
    if num == 15:
        if i >= len(b):
            return None
        num, i = b[i], i + 1
    if ctx and lvt in (6, 7):
        return num, ctx, lvt, i
    if lvt == 5:
        if i >= len(b):
            return None
        lvt, i = b[i], i + 1
        if lvt == 254:
            if i + 2 > len(b):
                return None
            lvt, i = _U16(b, i)[0], i + 2
    return (num, ctx, lvt, i) if i + lvt <= len(b) else None


def _bacnet_string(b: bytes) -> str:
    if not b:
        return ""
    enc = {0: "utf-8", 3: "utf-32-be", 4: "utf-16-be", 5: "latin-1"}.get(b[0], "latin-1")
    return _field(b[1:].decode(enc, errors="replace"))


class BACnetDissector(OTDissector):
    """BACnet/IP: BVLC, NPDU (network messages skipped), APDU service choices; errors,
    rejects and aborts as exceptions; I-Am (vendor ID) and the device object's vendor-name,
    model-name and firmware-revision (ReadProperty / ReadPropertyMultiple answers) as
    ``bacnet_identity``."""

    protocol = "bacnet"
    stream = False

    def __init__(self) -> None:
        super().__init__()
        self._ident: dict[str, str] = {}
        self._by_server = True

    def _parse(self, t_ms: int, data: bytes, to_server: bool) -> int:
        if len(data) < 4 or data[0] != 0x81:
            return len(data)
        fn, ln = data[1], _U16(data, 2)[0]
        npdu = {0x0A: 4, 0x0B: 4, 0x04: 10, 0x09: 4}.get(fn)
        if npdu is None or ln > len(data):
            return len(data)
        b = data[npdu:ln]
        if len(b) < 2 or b[0] != 1:
            return len(data)
        ctrl, i = b[1], 2
        for bit in (0x20, 0x08):  # DNET, DLEN, DADR; SNET, SLEN, SADR
            if ctrl & bit:
                if i + 3 > len(b):
                    return len(data)
                i += 3 + b[i + 2]
        if ctrl & 0x20:
            i += 1  # hop count
        if i >= len(b):
            return len(data)
        self.framed = True
        if ctrl & 0x80:  # a network layer message
            return len(data)
        self._apdu(t_ms, b[i:], to_server)
        return len(data)

    def _apdu(self, t_ms: int, a: bytes, to_server: bool) -> None:
        kind = a[0] >> 4
        if kind == 0 and len(a) > (at := 5 if a[0] & 0x08 else 3):  # confirmed request
            service = a[at]
            if to_server:
                self.request(t_ms, BACNET_CONFIRMED.get(service, "other"), service, None,
                             self._object(a[at + 1:]))
        elif kind == 1 and len(a) >= 2:  # unconfirmed request
            service = a[1]
            if service == 0:
                self._i_am(a[2:], to_server)
            elif to_server:
                self.request(t_ms, BACNET_UNCONFIRMED.get(service, "other"),
                             BACNET_UNCONFIRMED_BASE + service, None, None)
        elif kind == 3 and len(a) > (at := 4 if a[0] & 0x08 else 2):  # complex ack
            service = a[at]
            if service in (12, 14):
                self._properties(a[at + 1:], service == 14, not to_server)
        elif kind in (5, 6, 7):  # error, reject, abort
            self.exception(t_ms)

    @staticmethod
    def _object(b: bytes) -> str | None:
        if len(b) >= 5 and b[0] == 0x0C:  # context tag 0, 4 bytes: object identifier
            oid = struct.unpack_from(">I", b, 1)[0]
            return f"{oid >> 22}:{oid & 0x3FFFFF}"
        return None

    def _i_am(self, b: bytes, to_server: bool) -> None:
        # application tags: object id (12), max APDU (2), segmentation (9), vendor id (2)
        i, values = 0, list[int]()
        while i < len(b) and len(values) < 4:
            tag = _bacnet_tag(b, i)
            if tag is None:
                return
            num, ctx, ln, i = tag
            values.append(int.from_bytes(b[i:i + ln], "big") if num != 12 else 0)
            i += ln
        if len(values) == 4:
            self._ident.setdefault("vendor_id", str(values[3]))
            self._by_server = not to_server
            self._emit()

    def _properties(self, b: bytes, multiple: bool, by_server: bool) -> None:
        if len(b) < 5 or b[0] != 0x0C:
            return
        if struct.unpack_from(">I", b, 1)[0] >> 22 != _BACNET_DEVICE:
            return
        i = 5
        if multiple:
            i += 1  # opening tag 1
        prop = None
        while i < len(b):
            tag = _bacnet_tag(b, i)
            if tag is None:
                break
            num, ctx, ln, i = tag
            if ctx and ln in (6, 7):
                continue  # opening/closing tags
            value = b[i:i + ln]
            i += ln
            if ctx and num in ((2,) if multiple else (1,)):
                prop = int.from_bytes(value, "big")
            elif not ctx and num == 7 and prop in _BACNET_PROPS:
                self._ident[_BACNET_PROPS[prop]] = _bacnet_string(value)
                prop = None
        self._by_server = by_server
        self._emit()

    def _emit(self) -> None:
        d = self._ident
        self._entries = {x for x in self._entries if not x[1].startswith("bacnet_identity=")}
        vendor = d.get("vendor") or (f"vendor-id {d['vendor_id']}" if "vendor_id" in d else "")
        self.identity(self._by_server, "bacnet_identity", vendor, d.get("model", ""),
                      d.get("firmware") or d.get("software", ""))


#: (ip protocol, server port) -> a factory of a fresh dissector for one flow (the
#: ``features.payload.Dissector`` protocol).
OT_DISSECTORS: dict[tuple[int, int], Callable[[], Any]] = {
    (6, 502): ModbusDissector,
    (6, 20000): DNP3Dissector,
    (17, 20000): lambda: DNP3Dissector(stream=False),
    (6, 102): S7Dissector,
    (6, 44818): ENIPDissector,
    (17, 44818): lambda: ENIPDissector(stream=False),
    (6, 2404): IEC104Dissector,
    (17, 47808): BACnetDissector,
}

_I = pl.Int64()
#: Flow columns filled by the industrial dissectors: name -> (polars dtype, description);
#: null for a flow that no industrial dissector saw.
OT_COLUMNS: dict[str, tuple[pl.DataType, str]] = {
    "ot_protocol": (pl.String(), "industrial protocol dissected: modbus, dnp3, s7comm, enip, "
                                 "iec104, bacnet (docs/ot.md)"),
    "ot_requests": (_I, "industrial requests sent by the client"),
    "ot_reads": (_I, "of which read requests"),
    "ot_writes": (_I, "of which write/operate requests (Modbus 5/6/15/16/22/23, DNP3 "
                      "operate, S7 write var, CIP set/write, IEC 104 commands, BACnet "
                      "WriteProperty)"),
    "ot_program": (_I, "of which program-change requests (download, upload, stop, start, "
                       "restart, file functions)"),
    "ot_diagnostics": (_I, "of which diagnostic requests (identification, status, clock)"),
    "ot_exceptions": (_I, "exception or error responses sent by the server"),
    "ot_functions": (pl.String(), "requests per function code, `code:count,...` (docs/ot.md)"),
    "ot_units": (pl.String(), "unit IDs / station addresses addressed, `,`-separated"),
    "ot_objects": (_I, "distinct registers or objects addressed (unit, table or object, "
                       "start address)"),
    "ot_timeline": (pl.String(), "one line per second with requests: `epoch_s requests "
                                 "reads writes program diagnostic exceptions period_ms "
                                 "functions units objects` (docs/ot.md)"),
}


# -- window features -----------------------------------------------------------------------
#: Modbus function codes whose share of a window's Modbus requests is a feature of its own
#: (the rest count in ``modbus_fc_other_share``): the reads and writes every master uses,
#: read/write multiple and device identification.
MODBUS_FC_FEATURES = (1, 2, 3, 4, 5, 6, 15, 16, 23, 43)
MODBUS_FC_NAMES = {1: "read coils", 2: "read discrete inputs", 3: "read holding registers",
                   4: "read input registers", 5: "write single coil",
                   6: "write single register", 15: "write multiple coils",
                   16: "write multiple registers", 23: "read/write multiple registers",
                   43: "device identification"}
PROTOCOL_NAMES = {"modbus": "Modbus", "dnp3": "DNP3", "s7comm": "S7comm",
                  "enip": "EtherNet/IP", "iec104": "IEC 104", "bacnet": "BACnet"}

OT_FEATURE_DESCRIPTIONS: dict[str, str] = {
    "log_ot_requests": "log(1 + industrial requests (Modbus, DNP3, S7comm, CIP, IEC 104, "
                       "BACnet) in the device's flows)",
    **{f"ot_{c}_share": f"share of industrial requests of class {c} (docs/ot.md)"
       for c in CLASSES},
    "log_ot_program": "log(1 + program-change requests: download, upload, stop/start, restart)",
    "ot_exception_share": "exception responses / industrial requests (at most 1)",
    "log_ot_units": "log(1 + distinct units addressed: peer and unit ID / station address)",
    "log_ot_objects": "log(1 + distinct registers or objects addressed: peer, unit, table "
                      "or object, start address)",
    "log_ot_poll_period": "log(1 + polling period in s: median time between two requests for "
                          "the same item)",
    "ot_poll_jitter": "mean absolute deviation of those times from the polling period / the "
                      "polling period",
    **{f"modbus_fc_{k}_share": f"share of Modbus requests with function {k} "
                               f"({MODBUS_FC_NAMES[k]})" for k in MODBUS_FC_FEATURES},
    "modbus_fc_other_share": "share of Modbus requests with another function",
    **{f"{p}_write_share": f"share of {PROTOCOL_NAMES[p]} requests that write or operate"
       for p in PROTOCOLS},
}
OT_FEATURES = list(OT_FEATURE_DESCRIPTIONS)

_TIMELINE_FIELDS = ("_t", "_n", "_r", "_w", "_p", "_d", "_x", "_per", "_fns", "_units",
                    "_objs")


#: The flow columns the industrial window features read.
_EVENT_COLUMNS = ("ot_timeline", "ot_protocol", "first_seen", "last_seen", "peer_ip",
                  "dst_port", "mac", "ip")


def ot_events(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """One row per flow, device and second with industrial requests (``ot_timeline``
    exploded), its window start moved to the window that second fell in. ``att`` carries
    ``KEY_COLUMNS``, whose ``start``/``end`` are the window of the flow's first packet; the
    windows are tumbling, so a later second's window is that one plus whole lengths."""
    cols = _EVENT_COLUMNS
    if att.height == 0 or any(c not in att.columns for c in cols):
        return pl.DataFrame()
    ev = att.filter(pl.col("ot_timeline").is_not_null())
    if ev.height == 0:
        return pl.DataFrame()
    ev = ev.select(*keys, *cols[1:], pl.int_range(pl.len()).alias("_fid"),
                   pl.col("ot_timeline").str.split("\n").alias("_line")).explode("_line")
    parts = pl.col("_line").str.split(" ")
    ev = ev.with_columns(parts.list.get(i, null_on_oob=True).alias(name)
                         for i, name in enumerate(_TIMELINE_FIELDS))
    num = [n for n in _TIMELINE_FIELDS[:8]]
    ev = ev.with_columns(pl.col(num).cast(pl.Int64, strict=False)).drop_nulls(num)
    start = pl.col("start").dt.epoch("ms")
    length = pl.col("end").dt.epoch("ms") - start
    t = pl.max_horizontal(pl.col("_t") * 1000, pl.col("first_seen").dt.epoch("ms"))
    t = pl.min_horizontal(t, pl.col("last_seen").dt.epoch("ms"))
    wstart = start + ((t - start) // length) * length
    return ev.with_columns(
        t.alias("_t"),
        wstart.cast(pl.Datetime("ms", "UTC")).alias("start"),
        (wstart + length).cast(pl.Datetime("ms", "UTC")).alias("end"),
        # the flow was open for the whole window (a later one than its first)
        (pl.col("last_seen").dt.epoch("ms") >= wstart + length).alias("_covers"),
    ).drop("_line", "first_seen", "last_seen")


def _split_list(col: str) -> pl.Expr:
    return pl.when(pl.col(col) == "-").then(pl.lit([], pl.List(pl.String()))).otherwise(
        pl.col(col).str.split(","))


#: Seconds of industrial activity (timeline lines) up to which ``ot_window_features`` runs
#: in plain Python: a REST request's few flows (about 700 seconds) cost the frame path's
#: ~15 polars queries 15-18 ms whatever their size, and 4 ms here; captures take the frame
#: path.
SMALL_TIMELINE = 5000


def ot_window_features(att: pl.DataFrame, keys: list[str], *, small: bool | None = None
                       ) -> pl.DataFrame:
    """``keys`` + ``mac`` + ``ip`` + ``covered`` + ``OT_FEATURES``, one row per window with
    industrial requests (from ``ot_events``); windows without are absent (their features are
    0). ``covered``: one of the flows was open for the whole window.

    Two paths give the same table (tests compare them on real captures): polars queries for
    many seconds of activity, plain Python for a few (``small``: None chooses by
    ``SMALL_TIMELINE``)."""
    if att.height == 0 or any(c not in att.columns for c in _EVENT_COLUMNS):
        return pl.DataFrame()
    rows = att.filter(pl.col("ot_timeline").is_not_null())
    if rows.height == 0:
        return pl.DataFrame()
    if small is None:
        small = int(rows["ot_timeline"].str.count_matches("\n").sum()) + rows.height \
            <= SMALL_TIMELINE
    if small:
        return _ot_window_rows(rows, keys)
    return _ot_window_frame(rows, keys)


def _ot_window_frame(att: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``ot_window_features`` in polars queries."""
    ev = ot_events(att, keys)
    if ev.height == 0:
        return pl.DataFrame()
    n = pl.col("_n").sum()
    proto = pl.col("ot_protocol")
    win = ev.group_by(keys).agg(
        pl.col("mac").first(), pl.col("ip").min(), pl.col("_covers").any().alias("covered"),
        _safe_log(n).alias("log_ot_requests"),
        *[_share(pl.col(f"_{c[0]}").sum(), n).alias(f"ot_{c}_share") for c in CLASSES[:4]],
        _share(n - pl.sum_horizontal(*(pl.col(f"_{c[0]}").sum() for c in CLASSES[:4])), n)
        .alias("ot_other_share"),
        _safe_log(pl.col("_p").sum()).alias("log_ot_program"),
        _share(pl.col("_x").sum(), n).clip(upper_bound=1.0).alias("ot_exception_share"),
        *[_share(pl.col("_w").filter(proto == p).sum(), pl.col("_n").filter(proto == p).sum())
          .alias(f"{p}_write_share") for p in PROTOCOLS],
    )
    # distinct units and objects, per peer
    units = ev.select(*keys, "peer_ip", _split_list("_units").alias("u")).explode("u") \
        .drop_nulls("u").group_by(keys).agg(
            _safe_log(pl.struct("peer_ip", "u").n_unique()).alias("log_ot_units"))
    objs = ev.select(*keys, "peer_ip", _split_list("_objs").alias("o")).explode("o") \
        .drop_nulls("o").group_by(keys).agg(
            _safe_log(pl.struct("peer_ip", "o").n_unique()).alias("log_ot_objects"))
    # Modbus function mix
    fns = ev.filter(proto == "modbus").select(*keys, _split_list("_fns").alias("f")) \
        .explode("f").drop_nulls("f").with_columns(
            pl.col("f").str.split(":").list.get(0, null_on_oob=True)
            .cast(pl.Int64, strict=False).alias("code"),
            pl.col("f").str.split(":").list.get(1, null_on_oob=True)
            .cast(pl.Int64, strict=False).alias("k"))
    total = pl.col("k").sum()
    mix = fns.group_by(keys).agg(
        *[_share(pl.col("k").filter(pl.col("code") == c).sum(), total)
          .alias(f"modbus_fc_{c}_share") for c in MODBUS_FC_FEATURES],
        _share(pl.col("k").filter(~pl.col("code").is_in(MODBUS_FC_FEATURES)).sum(), total)
        .alias("modbus_fc_other_share"))
    win = win.join(units, on=keys, how="left").join(objs, on=keys, how="left") \
        .join(mix, on=keys, how="left").join(_polling(ev, keys), on=keys, how="left")
    return win.select(*keys, "mac", "ip", "covered", *OT_FEATURES).with_columns(
        pl.col(OT_FEATURES).cast(pl.Float64).fill_null(0.0).fill_nan(0.0))


_INT = re.compile(r"[+-]?[0-9]{1,19}")


def _int(v: str | None) -> int | None:
    """A timeline field as polars' non-strict cast to Int64 reads it (None when not one)."""
    if v is None:
        return None
    if v.isascii() and v.isdigit() and len(v) < 19:
        return int(v)
    if not _INT.fullmatch(v):
        return None
    n = int(v)
    return n if -2 ** 63 <= n < 2 ** 63 else None


def _items(v: str | None) -> list[str]:
    """A timeline list field (``_split_list``): ``-`` is empty, None has no items."""
    return [] if v is None or v == "-" else v.split(",")


class _TimelineSecond:
    """A timeline line after its time (seconds of one polled item repeat it): its counts
    (requests, reads, writes, program, diagnostic, exceptions), period (ms), the raw
    functions, units and objects, and those parsed."""

    __slots__ = ("sums", "period", "series", "units", "objs", "fns")

    def __init__(self, nums: list[int], fns: str | None, units: str | None,
                 objs: str | None) -> None:
        self.sums, self.period = nums[:6], nums[6]
        self.series = (fns, units, objs)
        self.units, self.objs = _items(units), _items(objs)
        self.fns: list[tuple[int | None, int]] = []  # (Modbus function code, requests)
        for item in _items(fns):
            code_k = item.split(":")
            k = _int(code_k[1]) if len(code_k) > 1 else None
            if k is not None:
                self.fns.append((_int(code_k[0]), k))


def _timeline_second(rest: str) -> _TimelineSecond | None:
    f: list[str | None] = [*rest.split(" ")]
    f += [None] * (10 - len(f))
    nums = [_int(v) for v in f[:7]]
    if None in nums:
        return None
    return _TimelineSecond(nums, f[7], f[8], f[9])  # type: ignore[arg-type]


class _OTWindow:
    """One window's industrial seconds while ``_ot_window_rows`` reads them: how many times
    each (line after its time, peer, protocol) came."""

    __slots__ = ("mac", "ip", "covered", "seen")

    def __init__(self, mac: str | None) -> None:
        self.mac, self.ip, self.covered = mac, None, False
        self.seen: dict[tuple[_TimelineSecond, str | None, str | None], int] = {}


def _ot_window_rows(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """``ot_window_features`` in plain Python, for a few flows (``rows``: those with an
    ``ot_timeline``): the same events as ``ot_events``, the same sums, distinct counts,
    Modbus mix and polling gaps as the frame path."""
    assert keys[2:] == ["start", "end"], keys
    ms = [pl.col(c).dt.epoch("ms") for c in ("start", "end", "first_seen", "last_seen")]
    src = rows.select(*keys[:2], *ms, "ot_timeline", "ot_protocol", "peer_ip", "dst_port",
                      "mac", "ip")
    wins: dict[tuple[Any, ...], _OTWindow] = {}
    series: dict[tuple[Any, ...], list[tuple[int, int, list[float]]]] = {}
    parsed: dict[str, _TimelineSecond | None] = {}
    gaps: dict[tuple[Any, ...], list[float]] = {}
    for fid, (a, b, start, end, first, last, tl, proto, peer, port, mac, ip) in enumerate(
            src.iter_rows()):
        length = end - start
        for line in tl.split("\n"):
            ts, _, rest = line.partition(" ")
            if rest in parsed:
                sec = parsed[rest]
            else:
                sec = parsed[rest] = _timeline_second(rest)
            if sec is None:
                continue
            tn = _int(ts)
            if tn is None:
                continue
            t = tn * 1000
            t = t if first is None else max(t, first)
            t = t if last is None else min(t, last)
            ws = start + ((t - start) // length) * length
            key = (a, b, ws, ws + length)
            w = wins.get(key)
            if w is None:
                w = wins[key] = _OTWindow(mac)
                gaps[key] = []
            if ip is not None and (w.ip is None or ip < w.ip):
                w.ip = ip
            if not w.covered and last is not None and last >= ws + length:
                w.covered = True
            s = (sec, peer, proto)
            w.seen[s] = w.seen.get(s, 0) + 1
            series.setdefault((key, peer, port, sec.series), []).append((t, fid, gaps[key]))
    for seconds in series.values():  # gaps across flows of one polled series
        seconds.sort(key=lambda e: (e[0], e[1]))
        for (t0, f0, _), (t1, f1, into) in zip(seconds, seconds[1:], strict=False):
            if f1 != f0 and t1 > t0:
                into.append((t1 - t0) / 1000)
    out = []
    for key, w in wins.items():
        sums = [0] * 6  # requests, reads, writes, program, diagnostic, exceptions
        by_proto: dict[str, list[int]] = {}  # protocol -> [writes, requests]
        units: set[tuple[str | None, str]] = set()
        objs: set[tuple[str | None, str]] = set()
        fns: dict[int | None, int] = {}  # Modbus function code -> requests
        g = gaps[key]
        for (sec, peer, proto), times in w.seen.items():
            for i, v in enumerate(sec.sums):
                sums[i] += v * times
            if proto is not None:
                wn = by_proto.setdefault(proto, [0, 0])
                wn[0] += sec.sums[2] * times
                wn[1] += sec.sums[0] * times
            units.update((peer, u) for u in sec.units)
            objs.update((peer, o) for o in sec.objs)
            if proto == "modbus":
                for c, k in sec.fns:
                    fns[c] = fns.get(c, 0) + k * times
            if sec.period >= 0:
                g.extend([sec.period / 1000] * times)
        n, r, wr, p, d, x = sums
        feats = {"log_ot_requests": math.log1p(max(n, 0))}
        for cls, v in zip(CLASSES[:4], (r, wr, p, d), strict=True):
            feats[f"ot_{cls}_share"] = v / n if n > 0 else 0.0
        feats["ot_other_share"] = (n - r - wr - p - d) / n if n > 0 else 0.0
        feats["log_ot_program"] = math.log1p(max(p, 0))
        feats["ot_exception_share"] = min(x / n, 1.0) if n > 0 else 0.0
        feats["log_ot_units"] = math.log1p(len(units))
        feats["log_ot_objects"] = math.log1p(len(objs))
        m = statistics.median(g) if g else 0.0
        feats["log_ot_poll_period"] = math.log1p(max(m, 0.0))
        feats["ot_poll_jitter"] = (sum(abs(v - m) for v in g) / len(g) / m
                                   if g and m > 0 else 0.0)
        total = sum(fns.values())
        for c in MODBUS_FC_FEATURES:
            feats[f"modbus_fc_{c}_share"] = fns.get(c, 0) / total if total > 0 else 0.0
        other = sum(k for c, k in fns.items() if c is not None and c not in MODBUS_FC_FEATURES)
        feats["modbus_fc_other_share"] = other / total if total > 0 else 0.0
        for proto in PROTOCOLS:
            wn = by_proto.get(proto, [0, 0])
            feats[f"{proto}_write_share"] = wn[0] / wn[1] if wn[1] > 0 else 0.0
        out.append((*key, w.mac, w.ip, w.covered, *(feats[c] for c in OT_FEATURES)))
    if not out:
        return pl.DataFrame()
    schema = rows.select(*keys, "mac", "ip").schema
    return pl.DataFrame(out, schema={**{k: schema[k] for k in keys[:2]},
                                     "start": pl.Int64, "end": pl.Int64,
                                     "mac": schema["mac"], "ip": schema["ip"],
                                     "covered": pl.Boolean,
                                     **{c: pl.Float64 for c in OT_FEATURES}},
                        orient="row").with_columns(
        pl.col("start", "end").cast(pl.Datetime("ms", "UTC"))).with_columns(
        pl.col(OT_FEATURES).fill_nan(0.0))


def _polling(ev: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Polling period and jitter per window, from the gaps between two requests for the
    same item: within a flow, the dissector's per-second median gap (a long polling
    connection); across flows (a master that opens a connection per poll), the time between
    two seconds of the same series (device, peer, service port, and the second's functions,
    units and objects) from different flows of the window. Only the window's own requests
    count, so that a window scores the same alone (the live sensor) as within a capture."""
    series = ["peer_ip", "dst_port", "_fns", "_units", "_objs"]
    # the flow breaks ties in time: a sort without it left their order, and a gap, to chance
    s = ev.select(*keys, *series, "_fid", "_t", "_per").sort(*keys, *series, "_t", "_fid")
    s = s.with_columns(pl.struct(*keys, *series).rle_id().alias("_sid"))
    cross = pl.when((pl.col("_sid") == pl.col("_sid").shift(1))
                    & (pl.col("_fid") != pl.col("_fid").shift(1))).then(pl.col("_t").diff())
    gaps = pl.concat([
        s.select(*keys, pl.col("_per").alias("g")).filter(pl.col("g") >= 0),
        s.select(*keys, cross.alias("g")).filter(pl.col("g") > 0),
    ]).with_columns(pl.col("g").cast(pl.Float64) / 1000)
    med = gaps.group_by(keys).agg(pl.col("g").median().alias("_m"))
    return gaps.join(med, on=keys).group_by(keys).agg(
        _safe_log(pl.col("_m").first()).alias("log_ot_poll_period"),
        _share((pl.col("g") - pl.col("_m")).abs().mean(), pl.col("_m").first())
        .alias("ot_poll_jitter"))


def _share(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    return pl.when(b > 0).then(a.cast(pl.Float64) / b).otherwise(0.0)


def _safe_log(e: pl.Expr) -> pl.Expr:
    return e.cast(pl.Float64).fill_null(0.0).clip(lower_bound=0.0).log1p()


__all__ = ["CLASSES", "OT_COLUMNS", "OT_DISSECTORS", "OT_FEATURES", "OT_FEATURE_DESCRIPTIONS",
           "PROTOCOLS", "ot_events", "ot_window_features", "BACnetDissector",
           "DNP3Dissector", "ENIPDissector", "IEC104Dissector", "ModbusDissector",
           "OTDissector", "S7Dissector"]

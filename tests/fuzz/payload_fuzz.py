"""Hostile payloads for the payload pass (features/payload.py) and its dissectors
(features/banners.py, features/tls.py), and what each must satisfy.

A dissector gets a flow's packets, each (to_server, bytes): near-valid messages of its protocol
(HTTP heads, banners, Telnet negotiation, TLS records over split segments, BER, MQTT CONNECT,
mail commands) with fields cut, lengths lied about and bytes flipped, mixed with raw bytes.
Promises: ``packet`` never raises; every entry is ``kind=value`` of a documented kind, a login
never more than ``cleartext_login=<documented way>``; a secret planted in the input (a
password, a community string, a user name) is never in any entry. The scan target writes a
pcap of such packets (with hostile IP and TCP/UDP headers too) and reads it with
``scan_capture``: a ``Scan`` or one ``InputError``, its segments of ``SEGMENT_SCHEMA``, the
secret nowhere.

Used by ``tests/fuzz/test_payload_fuzz.py`` (short, CI) and ``experiments/fuzz.py`` (100,000
inputs a target).
"""

from __future__ import annotations

import base64
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from flockwatch.datasets.pcap import TCP_ACK, TCP_PSH, ethernet, ipv4, tcp, udp
from flockwatch.features import banners, tls
from flockwatch.features.errors import InputError
from flockwatch.features.payload import KINDS, LOGINS, SEGMENT_SCHEMA, clean_entry, scan_capture
from flockwatch.features.pcapfile import pcap_header, record_header

SECRET = "Zq7-SECRET-pw"
COMMUNITY = "c0mmunity-SECRET"
USER = "u5er-SECRET"
_SECRETS = (SECRET, COMMUNITY, USER, base64.b64encode(f"{USER}:{SECRET}".encode()).decode())


@dataclass
class Flow:
    """One flow's packets for a dissector."""

    dissector: str
    packets: list[tuple[bool, bytes]]
    note: str = ""


DISSECTORS: dict[str, Callable[[], Any]] = {
    "http": banners.Http, "ssh": banners.Ssh, "ftp": banners.Ftp, "telnet": banners.Telnet,
    "pop3": banners.Pop3, "imap": banners.Imap, "mqtt": banners.Mqtt, "snmp": banners.Snmp,
    "tls": tls.Tls,
}


def check_entries(entries: list[tuple[bool, str]]) -> None:
    for by_server, entry in entries:
        assert isinstance(by_server, bool), entry
        kind, eq, value = entry.partition("=")
        assert eq and kind in KINDS, entry
        if kind == "cleartext_login":
            assert value in LOGINS, entry
        for s in _SECRETS:
            assert s not in entry, f"secret in {entry!r}"
        cleaned = clean_entry(entry)
        assert cleaned is None or cleaned.startswith(kind + "="), entry


def check_flow(flow: Flow, _folder: Path | None = None) -> None:
    d = DISSECTORS[flow.dissector]()
    for i, (to_server, data) in enumerate(flow.packets):
        d.packet(1_700_000_000_000 + i, data, to_server)
    check_entries(list(d.entries()))
    assert isinstance(d.columns(), dict)


# --- near-valid messages ------------------------------------------------------------------------
# Built from one drawn seed with ``random.Random``: Hypothesis draws one integer an input, so a
# campaign of 100,000 inputs a target runs in minutes, not hours; generation is random either
# way (the campaign runs Hypothesis's generate phase only).


class G(random.Random):
    """A seeded generator with the few shapes the builders need."""

    def bytes_(self, max_size: int, min_size: int = 0) -> bytes:
        return self.randbytes(self.randint(min_size, max_size))

    def text(self, max_size: int = 80) -> bytes:
        alphabet = "abcXYZ019 ./-_();:=\t\r\n\x00\x1b\x7f\xe9\xff"
        return "".join(self.choice(alphabet) for _ in range(self.randint(0, max_size))
                       ).encode("latin-1")

    def mutate(self, data: bytes) -> bytes:
        """Cut, flip bytes, insert junk, or leave as it is."""
        how = self.choice(["keep", "keep", "cut", "flip", "insert", "truncate_head"])
        if not data or how == "keep":
            return data
        if how == "cut":
            return data[:self.randrange(len(data))]
        if how == "truncate_head":
            return data[self.randrange(len(data)):]
        b = bytearray(data)
        if how == "flip":
            for _ in range(self.randint(1, 8)):
                b[self.randrange(len(b))] = self.randrange(256)
            return bytes(b)
        at = self.randrange(len(b) + 1)
        return bytes(b[:at]) + self.bytes_(64) + bytes(b[at:])

    def split(self, data: bytes) -> list[bytes]:
        """One message over 1-6 segments at random places."""
        cuts = sorted(self.randint(0, len(data)) for _ in range(self.randint(0, 5)))
        parts, last = [], 0
        for c in [*cuts, len(data)]:
            parts.append(data[last:c])
            last = c
        return [p for p in parts if p] or [data or b"\x00"]


def _http(g: G) -> list[tuple[bool, bytes]]:
    token = base64.b64encode(f"{USER}:{SECRET}".encode())
    method = g.choice([b"GET", b"POST", b"NOTIFY", b"M-SEARCH", b"XYZ", b""])
    choices = [b"User-Agent: " + g.text(), b"Authorization: Basic " + token,
               b"authorization:basic " + token, b"Authorization: Digest username=x",
               b"Server: " + g.text(), b"X: " + g.bytes_(40), b":" * 5, b"\r\n"]
    headers = [g.choice(choices) for _ in range(g.randint(0, 8))]
    req = method + b" / HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    resp = (b"HTTP/1.1 200 OK\r\nServer: " + g.text() + b"\r\n" + b"\r\n".join(headers)
            + b"\r\n\r\n")
    return [(True, p) for p in g.split(g.mutate(req))] + [
        (False, p) for p in g.split(g.mutate(resp))]


def _lines(g: G, to_server_lines: list[bytes], server_lines: list[bytes]
           ) -> list[tuple[bool, bytes]]:
    out = [(False, g.mutate(line)) for line in server_lines]
    out += [(True, g.mutate(line)) for line in to_server_lines]
    if g.random() < 0.5:
        g.shuffle(out)
    return [(s, p) for s, p in out if p]


def _ftp(g: G) -> list[tuple[bool, bytes]]:
    return _lines(g, [f"USER {USER}\r\n".encode(), f"PASS {SECRET}\r\n".encode(),
                      b"USER anonymous\r\n", b"PASS\r\n"],
                  [b"220-" + g.text() + b"\r\n", b"331 ok\r\n"])


def _mail(g: G) -> list[tuple[bool, bytes]]:
    return _lines(g, [f"USER {USER}\r\n".encode(), f"PASS {SECRET}\r\n".encode(),
                      f"a1 LOGIN {USER} {SECRET}\r\n".encode(), b"AUTH PLAIN\r\n",
                      b"a2 AUTHENTICATE PLAIN\r\n", base64.b64encode(SECRET.encode())],
                  [b"+OK ready\r\n", b"* OK IMAP\r\n"])


def _ssh(g: G) -> list[tuple[bool, bytes]]:
    return _lines(g, [b"SSH-2.0-" + g.text() + b"\r\n"],
                  [b"junk line\r\nSSH-2.0-" + g.text() + b"\r\n"])


def _telnet(g: G) -> list[tuple[bool, bytes]]:
    iac = bytes(g.choice([255, 250, 251, 252, 253, 254, 240, 24, 1, 31])
                for _ in range(g.randint(0, 20)))
    server = [iac, b"\r\n" + g.text() + b"\r\nlogin: ", b"Password: "]
    client = [iac, *[bytes([c]) for c in USER.encode()], b"\r",
              *[bytes([c]) for c in SECRET.encode()], b"\r\n"]
    out: list[tuple[bool, bytes]] = [(False, server[0]), (True, client[0]), (False, server[1])]
    out += [(True, g.mutate(c)) for c in client[1:len(USER) + 2]]
    out += [(False, g.mutate(server[2]))] + [(True, c) for c in client[len(USER) + 2:]]
    return [(s, p) for s, p in out if p]


def _ber_len(n: int) -> bytes:
    return bytes([n]) if n < 128 else b"\x82" + struct.pack("!H", n)


def _snmp(g: G) -> list[tuple[bool, bytes]]:
    version = g.choice([0, 1, 3, 2, 255])
    community = COMMUNITY.encode()
    pdu = b"\xa0" + _ber_len(5) + g.randbytes(5)
    body = b"\x02\x01" + bytes([version]) + b"\x04" + _ber_len(len(community)) + community + pdu
    msg = b"\x30" + _ber_len(len(body)) + body
    if g.random() < 0.5:  # a lie in a length
        msg = msg[:1] + bytes([g.randrange(256)]) + msg[2:]
    return [(True, g.mutate(msg)), (False, msg)]


def _mqtt(g: G) -> list[tuple[bool, bytes]]:
    name = g.choice([b"MQTT", b"MQIsdp", b"MQT", b""])
    var = struct.pack("!H", len(name)) + name + b"\x04" + bytes([g.randrange(256)]) + b"\x00\x3c"
    payload = struct.pack("!H", 4) + b"clid" + struct.pack("!H", len(USER)) + USER.encode() + \
        struct.pack("!H", len(SECRET)) + SECRET.encode()
    rem = len(var) + len(payload)
    enc = bytearray()
    while True:
        b, rem = rem & 0x7F, rem >> 7
        enc.append(b | (0x80 if rem else 0))
        if not rem:
            break
    if g.random() < 0.5:
        enc = bytearray(g.bytes_(6, 1))
    return [(True, g.mutate(b"\x10" + bytes(enc) + var + payload))]


_CERT: list[bytes] = []


def sample_certificate() -> bytes:
    """A real DER certificate (self-signed, made once), to mutate."""
    if not _CERT:
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz; device")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
                .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
                .sign(key, hashes.SHA256()))
        _CERT.append(cert.public_bytes(serialization.Encoding.DER))
    return _CERT[0]


def _hs(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def _tls(g: G) -> list[tuple[bool, bytes]]:
    version = g.choice([0x0300, 0x0301, 0x0302, 0x0303, 0x0304, 0x7F1C, 0xFFFF])
    ext = b""
    if g.random() < 0.5:
        ext = struct.pack("!HHH", 43, 2, g.choice([0x0304, 0x0303, 0x1234]))
    ext += g.bytes_(20)
    hello = struct.pack("!H", version) + bytes(32) + b"\x00\x13\x01\x00" + \
        struct.pack("!H", g.randint(0, 80)) + ext
    der = g.mutate(sample_certificate())
    one = len(der).to_bytes(3, "big") + der
    cert = _hs(11, len(one).to_bytes(3, "big") + one)
    flight = _hs(2, hello) + cert + _hs(14, b"")
    records = b""
    i = 0
    while i < len(flight):  # handshake over records of random sizes
        n = g.randint(1, 4000)
        chunk = flight[i:i + n]
        records += struct.pack("!BHH", 22, 0x0303, len(chunk)) + chunk
        i += n
    if g.random() < 0.5:
        records += struct.pack("!BHH", g.randrange(256), 0x0303, g.randrange(65536))
    server = g.split(g.mutate(records))
    return [(True, b"\x16\x03\x01\x00\x05hello")] + [(False, p) for p in server]


_BUILDERS: dict[str, Callable[[G], list[tuple[bool, bytes]]]] = {
    "http": _http, "ssh": _ssh, "ftp": _ftp, "telnet": _telnet, "pop3": _mail, "imap": _mail,
    "mqtt": _mqtt, "snmp": _snmp, "tls": _tls,
}


def make_flow(name: str, g: G) -> Flow:
    """Near-valid (3 in 4) or raw packets for the dissector ``name``."""
    if g.random() < 0.25:
        packets = [(g.random() < 0.5, g.bytes_(600, 1)) for _ in range(g.randint(0, 12))]
        return Flow(name, packets, "raw")
    return Flow(name, _BUILDERS[name](g), "near-valid")


_SEED = st.integers(0, 2**64 - 1)


def flow_cases(names: tuple[str, ...]) -> st.SearchStrategy[Flow]:
    """Flows for the dissectors ``names``, from one drawn seed."""
    return st.builds(lambda seed: make_flow((g := G(seed)).choice(names), g), _SEED)


def certificate_cases() -> st.SearchStrategy[bytes]:
    def build(seed: int) -> bytes:
        g = G(seed)
        return g.bytes_(600) if g.random() < 0.5 else g.mutate(sample_certificate())

    return st.builds(build, _SEED)


def check_certificate(der: bytes, _folder: Path | None = None) -> None:
    entry = tls.certificate_entry(der)
    if entry is not None:
        check_entries([(True, entry)])


# --- the scan over hostile captures -----------------------------------------------------------

_C, _S = ("02:00:00:00:00:01", "10.0.0.1"), ("02:00:00:00:00:02", "10.0.0.2")
_PORTS = {"http": 80, "ssh": 22, "ftp": 21, "telnet": 23, "pop3": 110, "imap": 143,
          "mqtt": 1883, "snmp": 161, "tls": 443}


@dataclass
class ScanCase:
    data: bytes
    note: str = ""


def scan_cases() -> st.SearchStrategy[ScanCase]:
    """A pcap of a few flows' packets (near-valid payloads on registered ports), whose
    Ethernet, IP and TCP/UDP headers may lie (lengths, header sizes, fragments, versions)."""

    def build(seed: int) -> ScanCase:
        g = G(seed)
        flows = [make_flow(g.choice(list(_PORTS)), g) for _ in range(g.randint(1, 4))]
        out = [pcap_header()]
        t = 1_700_000_000
        for k, flow in enumerate(flows):
            port = _PORTS[flow.dissector]
            for to_server, data in flow.packets:
                a, b = (_C, _S) if to_server else (_S, _C)
                sp, dp = (40000 + k, port) if to_server else (port, 40000 + k)
                if flow.dissector == "snmp":
                    seg = udp(a[1], b[1], sp, dp, data)
                    frame = ethernet(a[0], b[0], ipv4(a[1], b[1], 17, seg))
                else:
                    seg = tcp(a[1], b[1], sp, dp, 1, 1, TCP_PSH | TCP_ACK, data)
                    frame = ethernet(a[0], b[0], ipv4(a[1], b[1], 6, seg))
                frame = _lie(g, frame)
                t += g.choice([0, 1, 200, 2000])
                out.append(record_header(t, 0, len(frame)) + frame)
        data = b"".join(out)
        if g.random() < 0.2:  # the file itself cut
            data = data[:g.randint(0, len(data))]
        return ScanCase(data, f"seed {seed}")

    return st.builds(build, _SEED)


def _lie(g: G, frame: bytes) -> bytes:
    """One header field of the frame set to a hostile value, or none."""
    field = g.choice([None, None, None, "ethertype", "ihl", "total", "frag", "version", "doff",
                      "udplen", "cut"])
    b = bytearray(frame)
    v = g.randrange(65536)
    if field == "ethertype":
        b[12:14] = struct.pack("!H", g.choice([0x8100, 0x86DD, 0x88A8, v]))
    elif field == "ihl":
        b[14] = 0x40 | (v & 0x0F)
    elif field == "total":
        b[16:18] = struct.pack("!H", v)
    elif field == "frag":
        b[20:22] = struct.pack("!H", v)
    elif field == "version":
        b[14] = (v & 0xF0) | 5
    elif field == "doff" and len(b) > 46:
        b[46] = v & 0xFF
    elif field == "udplen" and len(b) > 39:
        b[38:40] = struct.pack("!H", v)
    elif field == "cut":
        b = b[:v % (len(b) + 1)]
    return bytes(b)


def check_scan(case: ScanCase, folder: Path) -> None:
    path = folder / "scan.pcap"
    path.write_bytes(case.data)
    try:
        scan = scan_capture(path)
    except InputError:
        return
    assert scan.segments.schema == SEGMENT_SCHEMA
    text = str(scan.segments.to_dicts()) + str(scan.announcements.to_dicts())
    for s in _SECRETS:
        assert s not in text, "secret in the scan's output"
    for col in ("client_entries", "server_entries"):
        for value in scan.segments[col].drop_nulls():
            check_entries([(True, e) for e in value.split("\n")])


CORPUS: dict[str, Callable[[], Any]] = {
    "empty payloads list": lambda: Flow("http", []),
    "telnet lone IAC": lambda: Flow("telnet", [(False, b"\xff"), (True, b"\xff\xfa")]),
    "tls record length past buffer": lambda: Flow(
        "tls", [(False, b"\x16\x03\x03\xff\xff" + b"\x02" * 100)] * 20),
    "tls handshake length 2**24-1": lambda: Flow(
        "tls", [(False, b"\x16\x03\x03\x00\x04\x0b\xff\xff\xff")]),
    "snmp long-form length 0x84ffffffff": lambda: Flow(
        "snmp", [(True, b"\x30\x84\xff\xff\xff\xff\x02\x01\x00")]),
    "mqtt varint 5 bytes": lambda: Flow("mqtt", [(True, b"\x10\xff\xff\xff\xff\x7f")]),
    "http header block of 4 KiB colons": lambda: Flow(
        "http", [(True, b"GET / HTTP/1.1\r\n" + b":" * 5000)]),
}


__all__ = ["CORPUS", "DISSECTORS", "Flow", "ScanCase", "certificate_cases", "check_certificate",
           "check_entries", "check_flow", "check_scan", "flow_cases", "scan_cases"]

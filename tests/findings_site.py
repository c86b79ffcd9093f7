"""A small capture with one instance of every risk finding, and the same traffic without the
risks, written by the findings tests (tests/test_findings.py) for their golden cases."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

from flockwatch.datasets.pcap import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    PcapWriter,
    ethernet,
    ipv4,
    tcp,
)

T0 = 1_772_438_400.0  # 2026-03-02 08:00:00 UTC
GW = ("00:09:5b:00:00:01", "192.168.1.1")
CAMERA = ("00:bc:99:00:00:50", "192.168.1.50")  # Telnet, SSH, TLS 1.0 web page
LAPTOP = ("00:1b:63:00:00:20", "192.168.1.20")  # logs in everywhere
NAS = ("00:11:32:00:00:60", "192.168.1.60")  # FTP server
HMI = ("00:80:f4:00:00:70", "192.168.1.70")  # the PLC's master
ROGUE = ("00:80:f4:00:00:71", "192.168.1.71")  # writes to the PLC
PLC = ("00:80:f4:00:00:80", "192.168.1.80")
ATTACKER = "203.0.113.7"  # answered by the camera's Telnet
SCANNER = "198.51.100.9"  # refused at the camera's SSH
REMOTE_READER = "203.0.113.8"  # reads the PLC from the internet


class Wire:
    """Frames of TCP sessions between hosts given as (MAC, IP); an address that is no host's
    comes through the gateway's MAC."""

    def __init__(self) -> None:
        self.w = PcapWriter()
        self.port = 41000

    def _frame(self, t: float, a: tuple[str, str], b: tuple[str, str], seg: bytes) -> None:
        self.w.add(t, ethernet(a[0], b[0], ipv4(a[1], b[1], 6, seg)))

    def session(self, t: float, client: tuple[str, str] | str, server: tuple[str, str] | str,
                dport: int, exchanges: list[tuple[bytes, bytes]], refuse: bool = False
                ) -> float:
        c = client if isinstance(client, tuple) else (GW[0], client)
        s = server if isinstance(server, tuple) else (GW[0], server)
        self.port += 1
        sp, cs, ss = self.port, 1000, 5000
        self._frame(t, c, s, tcp(c[1], s[1], sp, dport, cs, 0, TCP_SYN))
        if refuse:
            self._frame(t + 0.001, s, c, tcp(s[1], c[1], dport, sp, 0, cs + 1,
                                             TCP_RST | TCP_ACK))
            return t + 0.001
        cs += 1
        self._frame(t + 0.001, s, c, tcp(s[1], c[1], dport, sp, ss, cs, TCP_SYN | TCP_ACK))
        ss += 1
        t += 0.002
        self._frame(t, c, s, tcp(c[1], s[1], sp, dport, cs, ss, TCP_ACK))
        for req, resp in exchanges:
            t += 0.05
            if req:
                self._frame(t, c, s, tcp(c[1], s[1], sp, dport, cs, ss, TCP_PSH | TCP_ACK, req))
                cs += len(req)
            if resp:
                t += 0.002
                self._frame(t, s, c, tcp(s[1], c[1], dport, sp, ss, cs, TCP_PSH | TCP_ACK,
                                         resp))
                ss += len(resp)
        t += 0.05
        self._frame(t, c, s, tcp(c[1], s[1], sp, dport, cs, ss, TCP_FIN | TCP_ACK))
        self._frame(t + 0.001, s, c, tcp(s[1], c[1], dport, sp, ss, cs + 1, TCP_FIN | TCP_ACK))
        self._frame(t + 0.002, c, s, tcp(c[1], s[1], sp, dport, cs + 1, ss + 1, TCP_ACK))
        return t + 0.002


def certificate(expired: bool, self_signed: bool = True) -> bytes:
    """A DER X.509 certificate for CN=camera.local: expired (2015-2020) or valid (2020-2040)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "camera.local")])
    issuer = subject if self_signed else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "Example CA")])
    start, end = ((dt.datetime(2015, 1, 1), dt.datetime(2020, 1, 1)) if expired
                  else (dt.datetime(2020, 1, 1), dt.datetime(2040, 1, 1)))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def _hs(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!I", len(body))[1:] + body


def tls_server_flight(version: bytes, cert: bytes) -> bytes:
    """ServerHello (``version``: b"\\x03\\x01" is TLS 1.0), Certificate, ServerHelloDone in
    one record, as a small server sends them."""
    hello = _hs(2, version + bytes(32) + b"\x00" + b"\x00\x2f" + b"\x00")
    certs = struct.pack("!I", len(cert))[1:] + cert
    flight = hello + _hs(11, struct.pack("!I", len(certs))[1:] + certs) + _hs(14, b"")
    return b"\x16" + version + struct.pack("!H", len(flight)) + flight


def tls_client_hello(version: bytes) -> bytes:
    body = version + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    hs = _hs(1, body)
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def modbus(tid: int, function: int, unit: int = 1) -> bytes:
    """A Modbus/TCP request: read holding registers (3) or write single register (6)."""
    pdu = struct.pack("!BHH", function, 0, 10 if function == 3 else 1)
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def modbus_reply(tid: int, function: int, unit: int = 1) -> bytes:
    pdu = (struct.pack("!BB", 3, 20) + bytes(20)) if function == 3 else \
        struct.pack("!BHH", function, 0, 1)
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def write_site(path: Path, risky: bool = True) -> Path:
    """The capture: with ``risky``, one case of each rule (see the module's hosts); without,
    the same hosts doing the same things safely (SSH and TLS 1.2 with a valid certificate
    instead of Telnet and TLS 1.0, no login in clear text, no stranger writing, nothing
    answered from outside)."""
    w = Wire()
    t = T0
    if risky:
        # Telnet answered from the internet, with a login in clear text
        t = w.session(t, ATTACKER, CAMERA, 23, [
            (b"", b"\xff\xfd\x18\xff\xfd\x20login: "), (b"admin\r\n", b"Password: "),
            (b"hunter2\r\n", b"\r\nWelcome\r\n# ")]) + 1
    w.session(t, SCANNER, CAMERA, 22, [], refuse=True)  # refused: no finding
    t += 1
    t = w.session(t, LAPTOP, CAMERA, 22, [(b"SSH-2.0-OpenSSH_9.6\r\n",
                                          b"SSH-2.0-dropbear_2019.78\r\n")]) + 1
    version = b"\x03\x01" if risky else b"\x03\x03"
    t = w.session(t, LAPTOP, CAMERA, 443, [
        (tls_client_hello(version), tls_server_flight(version, certificate(expired=risky,
                                                                           self_signed=risky))),
        (b"\x17" + version + b"\x00\x10" + bytes(16), b"\x17" + version + b"\x00\x10"
         + bytes(16))]) + 1
    if risky:
        t = w.session(t, LAPTOP, NAS, 21, [
            (b"", b"220 NAS FTP server ready\r\n"), (b"USER admin\r\n", b"331 Password\r\n"),
            (b"PASS hunter2\r\n", b"230 Logged in\r\n"), (b"QUIT\r\n", b"221 Bye\r\n")]) + 1
    # the HMI polls the PLC; a rogue host writes a register
    t = w.session(t, HMI, PLC, 502, [(modbus(i, 3), modbus_reply(i, 3)) for i in range(1, 9)])
    t += 1
    t = w.session(t, ROGUE if risky else HMI, PLC, 502,
                  [(modbus(100, 6), modbus_reply(100, 6))]) + 1
    if risky:  # and someone on the internet reads it
        w.session(t, REMOTE_READER, PLC, 502, [(modbus(200, 3), modbus_reply(200, 3))])
    path.parent.mkdir(parents=True, exist_ok=True)
    w.w.write(path)
    return path

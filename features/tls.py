"""TLS for the payload pass (``features.payload``): the version a server negotiated and, up
to TLS 1.2, the server's leaf certificate, which it sends in clear.

The server's handshake records are buffered (at most ``MAX_BUFFER`` bytes, over the first
segments of the flow) until its ServerHello and Certificate messages are whole; the parse
stops at ChangeCipherSpec, application data or an alert. TLS 1.3 encrypts the certificate:
only ``tls_version`` then. The certificate is parsed with ``cryptography.x509``; it is
self-signed (``self_signed=1``) when its subject equals its issuer and its signature does not
fail to verify with its own key (verified, or of a kind that cannot be checked here: the
names alone decide then).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

#: Server ports read as TLS (documented in docs/flows.md, "The payload column").
TLS_PORTS = (443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 4433, 5061, 5986, 8443,
             8883, 9443)
#: Bytes of the server's side buffered at most.
MAX_BUFFER = 16 * 1024
#: Characters of the subject and of the issuer kept in ``tls_cert``, so that the whole value
#: (and its dates) stays within the pass's 200 characters.
MAX_NAME = 50

VERSIONS = {0x0300: "SSLv3", 0x0301: "TLS1.0", 0x0302: "TLS1.1", 0x0303: "TLS1.2",
            0x0304: "TLS1.3"}


def version_name(v: int) -> str | None:
    """A protocol version's name; drafts of TLS 1.3 (0x7fXX) count as TLS 1.3."""
    if v >> 8 == 0x7F:
        return "TLS1.3"
    return VERSIONS.get(v)


def server_hello_version(body: bytes) -> str | None:
    """The negotiated version of a ServerHello message body: the supported_versions
    extension (43) when present (TLS 1.3), else the legacy version field."""
    if len(body) < 38:
        return None
    legacy = (body[0] << 8) | body[1]
    i = 34  # version, random
    sid = body[i]
    i += 1 + sid + 3  # session id, cipher suite, compression
    if i + 2 <= len(body):
        ext_end = min(len(body), i + 2 + ((body[i] << 8) | body[i + 1]))
        i += 2
        while i + 4 <= ext_end:
            etype = (body[i] << 8) | body[i + 1]
            elen = (body[i + 2] << 8) | body[i + 3]
            if etype == 43 and elen == 2 and i + 6 <= ext_end:
                return version_name((body[i + 4] << 8) | body[i + 5])
            i += 4 + elen
    return version_name(legacy)


def _name(name: object) -> str:
    try:
        text = str(name.rfc4514_string())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - odd attribute types: a name we cannot print
        return "?"
    return text.replace(";", ",")[:MAX_NAME].strip()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Certificates already parsed (DER -> entry): servers send the same one on every flow.
_SEEN: dict[bytes, str | None] = {}


def certificate_entry(der: bytes) -> str | None:
    """``tls_cert=subject=..;issuer=..;not_before=ISO;not_after=ISO;self_signed=0|1`` of a
    DER certificate; None when it does not parse."""
    entry = _SEEN.get(der, "")
    if entry != "":
        return entry
    if len(_SEEN) >= 1024:
        _SEEN.clear()
    entry = _SEEN[der] = _certificate_entry(der)
    return entry


def _certificate_entry(der: bytes) -> str | None:
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        subject, issuer = cert.subject, cert.issuer
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except Exception:  # noqa: BLE001 - any malformed certificate: no entry
        return None
    self_signed = 0
    if subject == issuer:
        self_signed = 1
        try:
            cert.verify_directly_issued_by(cert)
        except Exception as exc:  # noqa: BLE001
            from cryptography.exceptions import InvalidSignature

            if isinstance(exc, InvalidSignature):
                self_signed = 0
    return (f"tls_cert=subject={_name(subject)};issuer={_name(issuer)};"
            f"not_before={_iso(before)};not_after={_iso(after)};self_signed={self_signed}")


class Tls:
    """``tls_version`` and ``tls_cert`` from the server's side of a TLS flow."""

    cap: int | None = 12

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()
        self.buf = b""  # server bytes not yet parsed into records
        self.hs = b""  # handshake bytes not yet parsed into messages
        self.seen = 0
        self.done = False
        self.version: str | None = None

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if to_server or self.done:
            return
        room = MAX_BUFFER - self.seen
        if room <= 0:
            self.done = True
            return
        payload = payload[:room]
        self.seen += len(payload)
        self.buf += payload
        self._records()
        if self.seen >= MAX_BUFFER:
            self.done = True

    def _records(self) -> None:
        buf = self.buf
        i = 0
        while not self.done and i + 5 <= len(buf):
            ctype = buf[i]
            length = (buf[i + 3] << 8) | buf[i + 4]
            if ctype != 22 or buf[i + 1] != 3:  # anything but a handshake record: the end
                self.done = True
                break
            if i + 5 + length > len(buf):
                break
            self.hs += buf[i + 5:i + 5 + length]
            i += 5 + length
            self._messages()
        self.buf = buf[i:]

    def _messages(self) -> None:
        hs = self.hs
        i = 0
        while not self.done and i + 4 <= len(hs):
            mtype = hs[i]
            length = int.from_bytes(hs[i + 1:i + 4], "big")
            if i + 4 + length > len(hs):
                break
            body = hs[i + 4:i + 4 + length]
            i += 4 + length
            if mtype == 2:  # ServerHello
                self.version = server_hello_version(body)
                if self.version:
                    self.found.add((True, "tls_version=" + self.version))
                if self.version == "TLS1.3" or self.version is None:
                    self.done = True  # the rest is encrypted
            elif mtype == 11:  # Certificate: a 3-byte list length, 3-byte lengths of each
                if len(body) >= 6:
                    n = int.from_bytes(body[3:6], "big")
                    entry = certificate_entry(body[6:6 + n]) if n else None
                    if entry:
                        self.found.add((True, entry))
                self.done = True
            elif mtype in (12, 13, 14):  # key exchange, certificate request, hello done
                self.done = True
        self.hs = hs[i:]

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


__all__ = ["MAX_BUFFER", "TLS_PORTS", "VERSIONS", "Tls", "certificate_entry",
           "server_hello_version", "version_name"]

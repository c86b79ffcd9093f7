"""Dissectors of clear-text application protocols for the payload pass (``features.payload``).

Each reads the first packets of one flow, one segment at a time (no TCP reassembly), and
keeps what names the software at either end (HTTP ``Server`` and ``User-Agent``, SSH, FTP
and Telnet banners) and whether a login crossed the wire in clear (``cleartext_login=<how>``).
A secret is never kept: not a password, not a community string, not a user name; an entry
says that one was seen. Malformed data ends a parse quietly; ``packet`` never raises (the
fuzz campaign, ``experiments/fuzz.py``, holds them to it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Server ports of each dissector (documented in docs/flows.md, "The payload column").
HTTP_PORTS = (80, 81, 591, 1400, 5000, 7547, 8000, 8008, 8060, 8080, 8081, 8088, 8888,
              49152, 49153)
SSH_PORTS = (22, 2222)
TELNET_PORTS = (23, 2323)
SNMP_PORTS = (161, 162)

_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ",
            b"CONNECT ", b"SUBSCRIBE ", b"UNSUBSCRIBE ", b"NOTIFY ", b"M-SEARCH ",
            b"PROPFIND ", b"TRACE ")
#: Bytes of a packet searched for a header block.
_HEAD = 4096


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip()


def http_headers(payload: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The first line and the headers (lower-case names, first occurrence) of an HTTP
    message's head in one packet; what follows an empty line is body, never read."""
    head = payload[:_HEAD]
    cut = head.find(b"\r\n\r\n")
    if cut >= 0:
        head = head[:cut]
    lines = head.split(b"\n")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:64]:
        name, colon, value = line.partition(b":")
        if colon and name and b" " not in name.strip():
            headers.setdefault(name.strip().lower(), value.strip())
    return lines[0].strip(), headers


_WANTED = re.compile(rb"\n(user-agent|authorization|server)[ \t]*:[ \t]*([^\r\n]*)",
                     re.IGNORECASE)


def wanted_headers(payload: bytes) -> dict[bytes, bytes]:
    """``User-Agent``, ``Authorization`` and ``Server`` (lower-case names, first occurrence)
    of an HTTP message's head in one packet: ``http_headers`` for the three the dissector
    reads, by one regular expression (the pass's hot path)."""
    head = payload[:_HEAD]
    cut = head.find(b"\r\n\r\n")
    if cut >= 0:
        head = head[:cut + 2]
    out: dict[bytes, bytes] = {}
    for m in _WANTED.finditer(head):
        out.setdefault(m.group(1).lower(), m.group(2).strip())
    return out


class Http:
    """``http_user_agent`` and ``cleartext_login=http_basic`` (an ``Authorization: Basic``
    header) from requests, ``http_server`` from responses."""

    cap: int | None = 8

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()
        self.basic = self.server = False

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if to_server:
            if self.basic or not payload.startswith(_METHODS):
                return
            h = wanted_headers(payload)
            ua = h.get(b"user-agent")
            if ua:
                self.found.add((False, "http_user_agent=" + _text(ua)))
            auth = h.get(b"authorization")
            if auth is not None and auth[:6].lower() == b"basic ":
                self.found.add((False, "cleartext_login=http_basic"))
                self.basic = True  # what a client sends later adds little: the pass is cheap
        elif not self.server and payload.startswith(b"HTTP/"):
            server = wanted_headers(payload).get(b"server")
            if server:
                self.found.add((True, "http_server=" + _text(server)))
                self.server = True  # one server per connection

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


class Ssh:
    """``ssh_banner``: the identification string (``SSH-2.0-OpenSSH_8.4p1 Debian-5``) each
    end sends first; a server may send other lines before it (RFC 4253, 4.2)."""

    cap: int | None = 2

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        for line in payload[:1024].split(b"\n")[:8]:
            if line.startswith(b"SSH-"):
                self.found.add((not to_server, "ssh_banner=" + _text(line)))
                return

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


def _lines(payload: bytes) -> list[bytes]:
    return [line.strip() for line in payload[:_HEAD].split(b"\n")[:32]]


class Ftp:
    """``ftp_banner`` (the text of the server's ``220`` greeting) and ``cleartext_login=ftp``
    (a ``USER`` then a ``PASS`` command from the client). An anonymous login (``USER
    anonymous`` or ``ftp``) gives no entry: its password is no secret."""

    cap: int | None = 12

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()
        self.greeted = False
        self.user = False

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if not to_server:
            if not self.greeted and payload.startswith(b"220"):
                self.greeted = True
                first = _lines(payload)[0]
                text = _text(first[3:].lstrip(b"- "))
                if text:
                    self.found.add((True, "ftp_banner=" + text))
            return
        for line in _lines(payload):
            verb, _, arg = line.partition(b" ")
            verb = verb.upper()
            if verb == b"USER":
                self.user = arg.strip().lower() not in (b"anonymous", b"ftp")
            elif verb == b"PASS" and self.user:
                self.found.add((False, "cleartext_login=ftp"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


_IAC = 255
_LOGIN_PROMPT = re.compile(r"(login|user ?name|user|account)\s*:\s*$", re.IGNORECASE)
_PASSWORD_PROMPT = re.compile(r"pass(word|code)?\s*:\s*$", re.IGNORECASE)


def strip_telnet(payload: bytes) -> bytes:
    """The data bytes of a Telnet segment: option negotiation (IAC WILL/WONT/DO/DONT x,
    subnegotiation IAC SB ... IAC SE and the other IAC commands) removed, IAC IAC kept as
    one 0xFF."""
    if _IAC not in payload:
        return payload
    out = bytearray()
    i, n = 0, len(payload)
    while i < n:
        b = payload[i]
        if b != _IAC:
            out.append(b)
            i += 1
            continue
        if i + 1 >= n:
            break
        cmd = payload[i + 1]
        if cmd == _IAC:
            out.append(_IAC)
            i += 2
        elif 251 <= cmd <= 254:  # WILL, WONT, DO, DONT + option
            i += 3
        elif cmd == 250:  # SB ... IAC SE
            end = payload.find(bytes((_IAC, 240)), i + 2)
            i = n if end < 0 else end + 2
        else:
            i += 2
    return bytes(out)


class Telnet:
    """``telnet_banner`` (the first line of text the server sends after option negotiation,
    unless it is a prompt) and ``cleartext_login=telnet``: a login prompt answered, then a
    password prompt answered (a password prompt alone, answered, counts too). Clients send a
    keystroke a packet, hence the larger cap."""

    cap: int | None = 48

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()
        self.tail = ""  # the end of the server's text, for prompts split over segments
        self.texted = False
        self.stage = 0  # 1 login prompt, 2 answered, 3 password prompt, 4 answered

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        data = strip_telnet(payload)
        text = data.decode("latin-1")
        if not to_server:
            printable = "".join(c for c in text if c.isprintable() or c in "\r\n")
            if not printable.strip():
                return
            if not self.texted:
                self.texted = True
                for line in printable.splitlines():
                    line = line.strip()
                    if line:
                        if not (_LOGIN_PROMPT.search(line) or _PASSWORD_PROMPT.search(line)):
                            self.found.add((True, "telnet_banner=" + line))
                        break
            self.tail = (self.tail + printable)[-64:]
            tail = self.tail.rstrip()
            if self.stage in (0, 2) and _PASSWORD_PROMPT.search(tail):
                self.stage = 3
            elif self.stage == 0 and _LOGIN_PROMPT.search(tail):
                self.stage = 1
            return
        if not any(32 < b < 127 for b in data):
            return
        if self.stage == 1:
            self.stage = 2
            self.tail = ""
        elif self.stage == 3:
            self.stage = 4
            self.found.add((False, "cleartext_login=telnet"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


class Pop3:
    """``cleartext_login=pop3``: ``USER`` then ``PASS``, or ``AUTH PLAIN``/``AUTH LOGIN``
    (base64 is no protection) from the client. ``APOP`` sends a digest: no entry."""

    cap: int | None = 8

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()
        self.user = False

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if not to_server:
            return
        for line in _lines(payload):
            words = line.split()
            verb = words[0].upper() if words else b""
            if verb == b"USER":
                self.user = True
            elif (verb == b"PASS" and self.user) or (
                    verb == b"AUTH" and len(words) > 1 and words[1].upper() in (b"PLAIN",
                                                                                 b"LOGIN")):
                self.found.add((False, "cleartext_login=pop3"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


class Imap:
    """``cleartext_login=imap``: ``tag LOGIN user password`` or ``tag AUTHENTICATE PLAIN``
    (or ``LOGIN``) from the client."""

    cap: int | None = 8

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if not to_server:
            return
        for line in _lines(payload):
            words = line.split()
            if len(words) < 2:
                continue
            verb = words[1].upper()
            if (verb == b"LOGIN" and len(words) >= 4) or (
                    verb == b"AUTHENTICATE" and len(words) > 2
                    and words[2].upper() in (b"PLAIN", b"LOGIN")):
                self.found.add((False, "cleartext_login=imap"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


def mqtt_connect_password(payload: bytes) -> bool | None:
    """Whether an MQTT CONNECT packet carries a password (its password flag); None when the
    payload is no CONNECT."""
    if len(payload) < 2 or payload[0] != 0x10:
        return None
    i, length, shift = 1, 0, 0
    while True:  # remaining length: a varint of at most 4 bytes
        if i >= len(payload) or i > 4:
            return None
        b = payload[i]
        length |= (b & 0x7F) << shift
        shift += 7
        i += 1
        if not b & 0x80:
            break
    if i + 2 > len(payload):
        return None
    nlen = (payload[i] << 8) | payload[i + 1]
    name = payload[i + 2:i + 2 + nlen]
    if name not in (b"MQTT", b"MQIsdp"):
        return None
    flags_at = i + 2 + nlen + 1  # after the protocol level
    if flags_at >= len(payload):
        return None
    return bool(payload[flags_at] & 0x40)


class Mqtt:
    """``cleartext_login=mqtt``: a CONNECT with its password flag set on plain MQTT."""

    cap: int | None = 2

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        if to_server and mqtt_connect_password(payload):
            self.found.add((False, "cleartext_login=mqtt"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


def _ber(p: bytes, i: int) -> tuple[int, int, int] | None:
    """(tag, start of the value, length) of the BER element at ``i``; None when cut."""
    if i + 2 > len(p):
        return None
    tag, first = p[i], p[i + 1]
    i += 2
    if first & 0x80:
        n = first & 0x7F
        if n == 0 or n > 4 or i + n > len(p):
            return None
        length = int.from_bytes(p[i:i + n], "big")
        i += n
    else:
        length = first
    return tag, i, length


def snmp_version(payload: bytes) -> int | None:
    """The version field of an SNMP message (0 v1, 1 v2c, 3 v3) when it has the shape of one
    (a SEQUENCE of an INTEGER and, for v1/v2c, a community OCTET STRING); else None."""
    message = snmp_message(payload)
    return None if message is None else message[0]


#: PDU tags of messages an agent sends unasked: v1 Trap, InformRequest, SNMPv2-Trap.
_UNASKED = frozenset({0xA4, 0xA6, 0xA7})


def snmp_message(payload: bytes) -> tuple[int, int | None] | None:
    """(version, PDU tag) of an SNMP message (the tag None for v3 or when cut)."""
    top = _ber(payload, 0)
    if top is None or top[0] != 0x30:
        return None
    ver = _ber(payload, top[1])
    if ver is None or ver[0] != 0x02 or not 1 <= ver[2] <= 4:
        return None
    version = int.from_bytes(payload[ver[1]:ver[1] + ver[2]], "big", signed=True)
    if version in (0, 1):
        community = _ber(payload, ver[1] + ver[2])
        if community is None or community[0] != 0x04:
            return None
        pdu = community[1] + community[2]
        return version, payload[pdu] if pdu < len(payload) else None
    return (version, None) if version == 3 else None


class Snmp:
    """``cleartext_login=snmp_v1`` or ``snmp_v2c``: a v1/v2c message from the client (a
    request to 161, a trap to 162) carries its community string in clear by design. A trap
    an agent sends from port 161 to a manager's 162 makes the agent the flow's server (the
    lower port): such a trap counts as sent by the server."""

    cap: int | None = 4

    def __init__(self) -> None:
        self.found: set[tuple[bool, str]] = set()

    def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
        message = snmp_message(payload)
        if message is None or not (to_server or message[1] in _UNASKED):
            return
        if message[0] == 0:
            self.found.add((not to_server, "cleartext_login=snmp_v1"))
        elif message[0] == 1:
            self.found.add((not to_server, "cleartext_login=snmp_v2c"))

    def entries(self) -> Iterable[tuple[bool, str]]:
        return self.found

    def columns(self) -> dict[str, object]:
        return {}


__all__ = ["HTTP_PORTS", "SNMP_PORTS", "SSH_PORTS", "TELNET_PORTS", "Ftp", "Http", "Imap",
           "Mqtt", "Pop3", "Snmp", "Ssh", "Telnet", "http_headers", "mqtt_connect_password",
           "snmp_message", "snmp_version", "strip_telnet", "wanted_headers"]

"""Values from the command line, checked once at the boundary: ports, ``HOST:PORT``, syslog
targets, durations and numbers.

Each parser is a plain function of a string that returns a value or raises ``ValueError`` with
a one-line message, so the CLI turns it into ``flockwatch: error: <option>: <problem>`` and the
fuzz tests (``tests/fuzz/test_rest_cli.py``) can call it directly. Nothing here resolves names
or opens sockets: a target that parses can still be unreachable, and the sink that uses it
counts that as a delivery failure.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from enum import StrEnum

#: The syslog port when ``--syslog HOST`` names none (RFC 5424/5426).
SYSLOG_PORT = 514
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() accepts '²' and '٣'
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")


class SyslogProtocol(StrEnum):
    udp = "udp"
    tcp = "tcp"


class CaptureTool(StrEnum):
    """How the live sensor takes packets off the interface (``serving.sensor.CAPTURES``)."""

    tcpdump = "tcpdump"
    socket = "socket"


def show(value: object) -> str:
    """A user-supplied name or value quoted, with control characters and newlines escaped, so
    it can never split or hide inside a one-line message (``'a\\nb'``)."""
    return repr(str(value))


def parse_port(text: str | int) -> int:
    """A TCP/UDP port, 1-65535 (``0`` would mean "any free port", which no target is)."""
    if isinstance(text, bool):
        raise ValueError(f"{show(text)}: expected a port number 1-65535")
    if isinstance(text, int):
        port = text
    else:
        if not _PORT.fullmatch(text):
            raise ValueError(f"{show(text)}: expected a port number 1-65535")
        port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1-65535")
    return port


def check_host(host: str) -> str:
    """A host name, an IPv4 address or an IPv6 address (without brackets); returned as given.

    Names follow RFC 1123 (letters, digits, hyphens, underscores as some zones use; labels of
    1-63 characters, at most 253 in all); all-numeric dotted names must be valid IPv4."""
    if not host:
        raise ValueError("empty host")
    if _UNPRINTABLE.search(host):
        raise ValueError(f"{show(host)}: a host name has no spaces or control characters")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{show(host)}: not an IPv6 address") from None
        return host
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError(f"{show(host)}: not an IPv4 address") from None
        return host
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{show(host)}: not a host name or address")
    return host


def parse_host_port(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` (or ``HOST`` / ``[IPV6]`` with a default port).

    An IPv6 address must be in brackets: in ``fe80::1:514`` the port cannot be told from the
    address. Raises ``ValueError`` naming what is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", text, re.DOTALL)
        if not m:
            raise ValueError(f"{show(text)}: expected [IPV6]:PORT")
        host, port_text = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{show(text)}: {show(host)} is not an IPv6 address") from None
    elif text.count(":") > 1:
        addr, _, maybe_port = text.rpartition(":")
        if _is_ipv6(text):
            hint = f"[{text}]:{default_port or SYSLOG_PORT}"
        elif _is_ipv6(addr) and _PORT.fullmatch(maybe_port):
            hint = f"[{addr}]:{maybe_port}"
        else:
            raise ValueError(f"{show(text)}: expected HOST:PORT (an IPv6 address in brackets)")
        raise ValueError(f"{show(text)}: put an IPv6 address in brackets, e.g. {hint}")
    else:
        host, sep, port_text_s = text.partition(":")
        port_text = port_text_s if sep else None
        check_host(host)
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{show(text)}: expected HOST:PORT (no port given)")
        return host, default_port
    try:
        return host, parse_port(port_text)
    except ValueError as exc:
        raise ValueError(f"{show(text)}: {exc}") from None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SyslogTarget:
    """Where CEF alerts go: host, port and transport, checked before the sensor starts."""

    host: str
    port: int
    protocol: SyslogProtocol = SyslogProtocol.udp

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"


def parse_syslog_target(text: str, protocol: str = "udp") -> SyslogTarget:
    """``--syslog HOST[:PORT]`` with ``--syslog-protocol udp|tcp``; the port defaults to 514."""
    try:
        proto = SyslogProtocol(protocol.lower() if isinstance(protocol, str) else protocol)
    except ValueError:
        raise ValueError(f"protocol {show(protocol)}: expected udp or tcp") from None
    host, port = parse_host_port(text, default_port=SYSLOG_PORT)
    return SyslogTarget(host, port, proto)


def check_number(value: float, *, minimum: float = 0.0, maximum: float,
                 inclusive_min: bool = False) -> float:
    """A finite number within bounds (``nan`` and ``inf`` slip through naive range checks)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{show(value)}: expected a number")
    v = float(value)
    too_low = v < minimum if inclusive_min else v <= minimum
    if not math.isfinite(v) or too_low or v > maximum:
        low = f">= {minimum:g}" if inclusive_min else f"> {minimum:g}"
        raise ValueError(f"{value!r} is out of range: give a number {low} and "
                         f"<= {maximum:.15g}")
    return v


def parse_duration_bounded(text: str | float, *, minimum: float = 0.0,
                           maximum: float | None = None) -> float:
    """A duration (``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or seconds) within bounds."""
    from flockwatch.features.windows import MAX_DURATION_S, parse_duration

    maximum = MAX_DURATION_S if maximum is None else maximum
    value = parse_duration(text)
    if value is None:
        raise ValueError("empty duration: use e.g. 90s, 15m, 2h, 7d")
    if not minimum <= value <= maximum:
        raise ValueError(f"{show(text)}: give a length from {_human(minimum)} to "
                         f"{_human(maximum)}")
    return value


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"

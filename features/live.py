"""Live interfaces: frames captured from an AF_PACKET socket into pcap chunks that NFStream
meters exactly like files.

Why not NFStream's own live mode: its meter expires flows on packet time, so on a quiet link
the last flows stay in its cache until more traffic arrives, and stopping it loses them. A chunk
closed at a known time is metered completely, gives the same flows as the file would, and the
kernel's drop counter (PACKET_STATISTICS) tells whether anything was lost.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from flockwatch.features.errors import InputError
from flockwatch.features.flows import IDLE_TIMEOUT_S, read_capture
from flockwatch.features.pcapfile import ETHERNET, PcapStream

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_STATISTICS = 6


def check_interface(interface: str) -> None:
    """Raise ``InputError`` when ``interface`` does not exist."""
    if not interface or "/" in interface or not Path("/sys/class/net", interface).exists():
        raise InputError(interface, "no such network interface")


class RawCapture:
    """Promiscuous capture of every frame on ``interface``.

    ``capture_until(path, deadline)`` writes frames to a pcap until ``deadline`` (monotonic
    seconds) or until ``should_stop()`` is true. ``dropped`` counts the frames the kernel
    dropped so far (its PACKET_STATISTICS, read after each capture).
    """

    def __init__(self, interface: str, *, snaplen: int = 65535, buffer_mb: int = 64) -> None:
        check_interface(interface)
        self.interface = interface
        self.snaplen = snaplen
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise InputError(interface, "no permission to capture (run as root or grant "
                                        "CAP_NET_RAW)") from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_mb * 1024 * 1024)
            sock.bind((interface, 0))
            ifindex = socket.if_nametoindex(interface)
            mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            sock.close()
            raise InputError(interface, f"cannot capture: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._sock = sock
        self.packets = 0
        self.dropped = 0

    def _stats(self) -> None:
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _, drops = struct.unpack("II", raw)  # reading resets the kernel counters
        self.dropped += drops

    def capture_until(self, path: str | os.PathLike[str], deadline: float,
                      should_stop: Callable[[], bool] | None = None) -> int:
        """Capture into a pcap at ``path``; returns the number of frames written."""
        buf = bytearray(self.snaplen)
        view = memoryview(buf)
        with open(path, "wb") as fh, PcapStream(fh, ETHERNET, self.snaplen) as out:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or (should_stop is not None and should_stop()):
                    break
                ready, _, _ = select.select([self._sock], [], [], min(left, 0.2))
                if not ready:
                    continue
                while True:
                    try:
                        size, addr = self._sock.recvfrom_into(buf)
                    except BlockingIOError:
                        break
                    if addr[2] == socket.PACKET_OUTGOING:
                        continue  # each frame once, as it arrives on the link
                    out.write(time.time(), bytes(view[:size]))
            n = out.packets
        self.packets += n
        self._stats()
        return n

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RawCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture_interface(interface: str, duration: float, *, idle_timeout: int = IDLE_TIMEOUT_S,
                      should_stop: Callable[[], bool] | None = None) -> pl.DataFrame:
    """Capture ``interface`` for ``duration`` seconds and return its flow table.

    Packets are metered by NFStream once the capture ends, so every flow is complete.
    """
    if duration <= 0:
        raise InputError(interface, f"capture duration must be > 0 s, got {duration}")
    with RawCapture(interface) as cap, tempfile.TemporaryDirectory(prefix="flockwatch-") as tmp:
        chunk = Path(tmp) / f"{interface}.pcap"
        cap.capture_until(chunk, time.monotonic() + duration, should_stop)
        if cap.packets == 0:
            from flockwatch.features.schema import empty_flows

            return empty_flows()
        flows, _ = read_capture(chunk, idle_timeout=idle_timeout)
    return flows.with_columns(pl.lit(interface).alias("source"))


class ReplayLinkError(RuntimeError):
    """The replay link could not be built here (not root, no iproute2, namespaces denied)."""


@contextlib.contextmanager
def replay_link(prefix: str = "fw") -> Iterator[tuple[str, str, str]]:
    """A veth pair with one end in a new network namespace, both up, IPv6 off (no router
    solicitations: only what is replayed crosses it): ``(namespace, host_if, ns_if)``.
    Frames sent on ``ns_if`` inside the namespace (``ip netns exec NS tcpreplay -i NS_IF
    capture.pcap``) arrive on ``host_if``, which the sensor listens on: a capture played as
    live traffic, for tests and benchmarks. Needs root; removed on exit.
    Raises ``ReplayLinkError`` when the link cannot be built."""
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"{prefix}{tag}", f"{prefix}a{tag}", f"{prefix}b{tag}"

    def sh(*args: str) -> None:
        subprocess.run(args, check=True, capture_output=True)

    if os.geteuid() != 0:
        raise ReplayLinkError("needs root (network namespaces, raw sockets)")
    try:
        sh("ip", "netns", "add", ns)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or str(exc).encode()
        raise ReplayLinkError(f"cannot create a network namespace here: "
                              f"{detail.decode().strip()}") from None
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("sysctl", "-qw", f"net.ipv6.conf.{host_if}.disable_ipv6=1")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{ns_if}.disable_ipv6=1")
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        yield ns, host_if, ns_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)

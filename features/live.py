"""Live interfaces: frames captured into pcap chunks that NFStream meters exactly like files.

Why not NFStream's own live mode: its meter expires flows on packet time, so on a quiet link
the last flows stay in its cache until more traffic arrives, and stopping it loses them. A chunk
closed at a known time is metered completely, gives the same flows as the file would, and the
kernel's drop counter tells whether anything was lost.

Packets come through tcpdump (``TcpdumpCapture``: libpcap's TPACKET_V3 ring, in a process of
its own). ``RawCapture``, an AF_PACKET socket read in Python, is kept for comparison: it shares
the interpreter with scoring, and drops packets sooner (``experiments/bench_live.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.errors import InputError
from flockwatch.features.flows import IDLE_TIMEOUT_S, read_capture
from flockwatch.features.pcapfile import ETHERNET, PcapStream, pcap_header

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


_DROPS = re.compile(rb"(\d+) packets? dropped by kernel")
_RECEIVED = re.compile(rb"(\d+) packets? received by filter")


def tcpdump_path() -> str:
    """The tcpdump binary; ``InputError`` naming the fix when it is not installed."""
    path = shutil.which("tcpdump")
    if path is None:
        raise InputError("tcpdump", "not found: live capture needs it (apt-get install tcpdump)")
    return path


class TcpdumpCapture:
    """Capture through tcpdump: libpcap's memory-mapped TPACKET_V3 ring, in a process of its
    own, so the kernel's ring keeps filling while Python scores a window.

    tcpdump writes one pcap stream to a pipe (``-w - -U``); ``capture_until(path,
    deadline)`` cuts it into files by each packet's own kernel time stamp: a packet stamped
    before the window's end (the wall-clock time of ``deadline``) belongs to the file, one
    stamped after it is kept for the next. Reading goes on a little past the deadline
    (``grace_s``) for packets still in the pipe. ``dropped`` is the kernel's count, asked of
    tcpdump (SIGUSR1) after every window. Only frames arriving on the interface are taken
    (``-Q in``), each once, as on a SPAN port.
    """

    def __init__(self, interface: str, *, snaplen: int = 65535, buffer_mb: int = 64,
                 grace_s: float = 0.25) -> None:
        check_interface(interface)
        binary = tcpdump_path()
        self.interface = interface
        self.snaplen = snaplen
        self.grace_s = grace_s
        self.packets = 0
        self.dropped = 0
        self._received = 0
        self._proc = subprocess.Popen(
            [binary, "-i", interface, "-w", "-", "-U", "-n", "-Q", "in", "-s", str(snaplen),
             "-B", str(buffer_mb * 1024), "--immediate-mode"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        self._out = self._proc.stdout.fileno()  # type: ignore[union-attr]
        self._err = bytearray()
        self._buf = bytearray()
        self._pending: list[bytes] = []  # records stamped after the last window's end
        self._linktype = ETHERNET
        self._order = "<"
        try:
            self._read_header()
        except InputError:
            self.close()
            raise

    def _read_some(self, timeout: float) -> bool:
        """Read what the pipe holds (waiting up to ``timeout``); False at its end."""
        err = self._proc.stderr.fileno()  # type: ignore[union-attr]
        ready, _, _ = select.select([self._out, err], [], [], max(0.0, timeout))
        if err in ready:
            self._err += os.read(err, 65536)
        if self._out in ready:
            data = os.read(self._out, 1 << 20)
            if not data:
                return False
            self._buf += data
        return True

    def _read_header(self) -> None:
        end = time.monotonic() + 10.0
        while len(self._buf) < 24:
            if not self._read_some(end - time.monotonic()) or time.monotonic() > end:
                msg = self._err.decode(errors="replace").strip().splitlines()
                raise InputError(self.interface, "cannot capture: tcpdump: "
                                 + (msg[-1] if msg else "no output"))
        magic = bytes(self._buf[:4])
        self._order = "<" if magic == b"\xd4\xc3\xb2\xa1" else ">"
        self._linktype = struct.unpack_from(self._order + "I", self._buf, 20)[0]
        del self._buf[:24]

    def _records(self) -> Iterator[tuple[float, bytes]]:
        """Whole records in the buffer: (time stamp, record with its header)."""
        head = struct.Struct(self._order + "IIII")
        off, buf = 0, self._buf
        while len(buf) - off >= 16:
            sec, usec, incl, _ = head.unpack_from(buf, off)
            if len(buf) - off < 16 + incl:
                break
            yield sec + usec / 1e6, bytes(buf[off:off + 16 + incl])
            off += 16 + incl
        del buf[:off]

    def capture_until(self, path: str | os.PathLike[str], deadline: float,
                      should_stop: Callable[[], bool] | None = None) -> int:
        """Capture into a pcap at ``path`` until ``deadline`` (monotonic seconds) or
        ``should_stop()``; returns the number of frames written."""
        boundary = time.time() + (deadline - time.monotonic())
        n = 0
        with open(path, "wb") as fh:
            fh.write(pcap_header(self._linktype, self.snaplen, self._order))
            chunks, self._pending = self._pending, []
            n += len(chunks)
            stop_at = deadline + self.grace_s
            alive = True
            while alive:
                now = time.monotonic()
                if now >= stop_at or (should_stop is not None and should_stop()):
                    break
                alive = self._read_some(min(stop_at - now, 0.2))
                for ts, rec in self._records():
                    if ts < boundary:
                        chunks.append(rec)
                        n += 1
                    else:
                        self._pending.append(rec)
                if len(chunks) >= 4096:
                    fh.write(b"".join(chunks))
                    chunks.clear()
            fh.write(b"".join(chunks))
        if not alive:
            raise OSError(f"tcpdump on {self.interface} stopped: "
                          + self._err.decode(errors="replace").strip()[-200:])
        self.packets += n
        self._stats()
        return n

    def _stats(self) -> None:
        """Ask tcpdump for its counts (SIGUSR1: it prints them to stderr) and keep the
        kernel's drop count, which tcpdump reports since its start."""
        try:
            self._proc.send_signal(signal.SIGUSR1)
        except ProcessLookupError:
            return
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            err = self._proc.stderr.fileno()  # type: ignore[union-attr]
            ready, _, _ = select.select([err], [], [], end - time.monotonic())
            if not ready:
                break
            self._err += os.read(err, 65536)
            drops = _DROPS.findall(self._err)
            if drops and self._err.endswith(b"\n"):
                self.dropped = int(drops[-1])
                received = _RECEIVED.findall(self._err)
                self._received = int(received[-1]) if received else self._received
                del self._err[:max(0, len(self._err) - 4096)]
                break

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for f in (self._proc.stdout, self._proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> TcpdumpCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessCapture:
    """``TcpdumpCapture`` in a process of its own: the sensor's capture.

    Cutting tcpdump's stream into window files is Python work on every packet. Done in the
    sensor's process, it waits on the interpreter lock whenever scoring holds it, the pipe
    and then the kernel's ring fill up, and the kernel drops packets (measured: 122,991 of
    571,124 at 40,000 packets/s beside a busy thread, none without it). In a process of its
    own it keeps pace. Same interface as ``TcpdumpCapture``; each ``capture_until`` is one
    request to the capture process, which keeps tcpdump and its unread packets between
    windows, so nothing falls between two windows."""

    def __init__(self, interface: str, *, snaplen: int = 65535, buffer_mb: int = 64) -> None:
        import multiprocessing as mp

        check_interface(interface)
        tcpdump_path()
        self.interface = interface
        self.packets = 0
        self.dropped = 0
        ctx = mp.get_context("spawn")  # no fork of a process that runs threads
        self._conn, child = ctx.Pipe()
        self._cut = ctx.Event()
        self._proc = ctx.Process(target=_serve_capture, name=f"capture-{interface}",
                                 args=(interface, snaplen, buffer_mb, child, self._cut),
                                 daemon=True)
        self._proc.start()
        child.close()
        msg = self._reply(None, 60.0)
        if msg[0] != "ready":
            self.close()
            raise InputError(interface, str(msg[1]))

    def _reply(self, should_stop: Callable[[], bool] | None, timeout: float | None = None
               ) -> tuple[object, ...]:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._conn.poll(0.1):
            if should_stop is not None and should_stop():
                self._cut.set()
            if not self._proc.is_alive():
                raise OSError(f"the capture process of {self.interface} ended")
            if end is not None and time.monotonic() > end:
                raise OSError(f"the capture process of {self.interface} does not answer")
        msg: tuple[object, ...] = self._conn.recv()
        return msg

    def capture_until(self, path: str | os.PathLike[str], deadline: float,
                      should_stop: Callable[[], bool] | None = None) -> int:
        self._cut.clear()
        self._conn.send(("cut", os.fspath(path), time.time() + (deadline - time.monotonic())))
        msg = self._reply(should_stop)
        if msg[0] != "done":
            raise OSError(str(msg[1]))
        n, self.packets, self.dropped = (int(str(x)) for x in msg[1:4])
        return n

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("close",))
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> ProcessCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve_capture(interface: str, snaplen: int, buffer_mb: int, conn: Any, cut: Any) -> None:
    """The capture process: one window file per request, until ``close`` or until the
    sensor's end of the pipe closes (the sensor died: tcpdump is stopped with it)."""
    try:
        cap = TcpdumpCapture(interface, snaplen=snaplen, buffer_mb=buffer_mb)
    except InputError as exc:
        conn.send(("error", exc.problem))
        return
    conn.send(("ready",))
    with cap:
        while True:
            try:
                cmd = conn.recv()
            except (EOFError, OSError):
                return
            if cmd[0] != "cut":
                return
            _, path, boundary = cmd
            try:
                n = cap.capture_until(path, time.monotonic() + (boundary - time.time()),
                                      cut.is_set)
            except OSError as exc:
                conn.send(("error", str(exc)))
                return
            conn.send(("done", n, cap.packets, cap.dropped))


def capture_interface(interface: str, duration: float, *, idle_timeout: int = IDLE_TIMEOUT_S,
                      should_stop: Callable[[], bool] | None = None) -> pl.DataFrame:
    """Capture ``interface`` for ``duration`` seconds and return its flow table.

    Packets are metered by NFStream once the capture ends, so every flow is complete.
    """
    if duration <= 0:
        raise InputError(interface, f"capture duration must be > 0 s, got {duration}")
    with TcpdumpCapture(interface) as cap, \
            tempfile.TemporaryDirectory(prefix="flockwatch-") as tmp:
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

"""Any traffic source -> a ``FLOW_SCHEMA`` flow table.

Sources: pcap/pcapng files and folders of them (NFStream with nDPI), a live interface
(NFStream, needs capture rights), Zeek ``conn.log`` files. ``extract`` is the one entry point
for files and folders; it goes on past bad inputs and reports each in ``ExtractResult.problems``.
Reading one capture is a pure step (path -> table), so a pool or a distributed engine can map it.
"""

from __future__ import annotations

import operator
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from flockwatch.features.captures import inspect_capture, is_capture_name
from flockwatch.features.errors import InputError
from flockwatch.features.schema import FLOW_SCHEMA, conform, empty_flows
from flockwatch.features.zeek import looks_like_zeek, read_zeek_conn

#: NFStream defaults used everywhere (files, live, training and serving agree on flow cuts).
IDLE_TIMEOUT_S = 120
ACTIVE_TIMEOUT_S = 1800

# NFStream attribute -> FLOW_SCHEMA column.
_NF_FIELDS: dict[str, str] = {
    "bidirectional_first_seen_ms": "first_seen",
    "bidirectional_last_seen_ms": "last_seen",
    "bidirectional_duration_ms": "duration_ms",
    "src_mac": "src_mac",
    "dst_mac": "dst_mac",
    "src_ip": "src_ip",
    "dst_ip": "dst_ip",
    "src_port": "src_port",
    "dst_port": "dst_port",
    "protocol": "protocol",
    "ip_version": "ip_version",
    "vlan_id": "vlan_id",
    "application_name": "application",
    "application_category_name": "application_category",
    "requested_server_name": "server_name",
    "user_agent": "user_agent",
    "client_fingerprint": "client_fingerprint",
    "server_fingerprint": "server_fingerprint",
    "bidirectional_packets": "packets",
    "bidirectional_bytes": "bytes",
    "src2dst_packets": "src2dst_packets",
    "src2dst_bytes": "src2dst_bytes",
    "dst2src_packets": "dst2src_packets",
    "dst2src_bytes": "dst2src_bytes",
    "bidirectional_min_ps": "min_ps",
    "bidirectional_mean_ps": "mean_ps",
    "bidirectional_stddev_ps": "stddev_ps",
    "bidirectional_max_ps": "max_ps",
    "bidirectional_min_piat_ms": "min_piat_ms",
    "bidirectional_mean_piat_ms": "mean_piat_ms",
    "bidirectional_stddev_piat_ms": "stddev_piat_ms",
    "bidirectional_max_piat_ms": "max_piat_ms",
    "bidirectional_syn_packets": "syn_packets",
    "bidirectional_ack_packets": "ack_packets",
    "bidirectional_psh_packets": "psh_packets",
    "bidirectional_rst_packets": "rst_packets",
    "bidirectional_fin_packets": "fin_packets",
    "bidirectional_urg_packets": "urg_packets",
}
_GET = operator.attrgetter(*_NF_FIELDS)
_RAW_SCHEMA = {col: FLOW_SCHEMA[col] for col in _NF_FIELDS.values()}
_RAW_SCHEMA["first_seen"] = pl.Int64()
_RAW_SCHEMA["last_seen"] = pl.Int64()


@dataclass(frozen=True)
class Problem:
    """An input that could not be read (``error``) or gave nothing to read (``notice``)."""

    source: str
    message: str
    #: "error": nothing could be read; "warning": read in part; "notice": nothing to read
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


@dataclass
class ExtractResult:
    """Flows of all readable inputs, plus every input that had a problem."""

    flows: pl.DataFrame
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


def _streamer(source: str, *, n_meters: int, idle_timeout: int, active_timeout: int,
              **kwargs: object) -> object:
    import nfstream  # heavy: imported where used

    return nfstream.NFStreamer(
        source=source,
        statistical_analysis=True,
        n_dissections=20,
        n_meters=n_meters,
        idle_timeout=idle_timeout,
        active_timeout=active_timeout,
        **kwargs,
    )


def _rows_to_frame(rows: list[tuple[object, ...]], source: str) -> pl.DataFrame:
    if not rows:
        return empty_flows()
    raw = pl.DataFrame(rows, schema=_RAW_SCHEMA, orient="row")
    zero_mac = "00:00:00:00:00:00"
    return conform(
        raw.with_columns(
            pl.lit(source).alias("source"),
            pl.col("first_seen").cast(pl.Datetime("ms", "UTC")),
            pl.col("last_seen").cast(pl.Datetime("ms", "UTC")),
            pl.when(pl.col("src_mac") != zero_mac).then(pl.col("src_mac")).alias("src_mac"),
            pl.when(pl.col("dst_mac") != zero_mac).then(pl.col("dst_mac")).alias("dst_mac"),
            pl.col("client_fingerprint", "server_fingerprint", "server_name", "user_agent")
            .replace("", None),
        )
    )


def read_capture(
    path: str | os.PathLike[str],
    *,
    idle_timeout: int = IDLE_TIMEOUT_S,
    active_timeout: int = ACTIVE_TIMEOUT_S,
    n_meters: int = 1,
) -> tuple[pl.DataFrame, list[Problem]]:
    """Read one pcap/pcapng file into a flow table.

    Raises ``InputError`` when the file is no usable capture; returns notices for a truncated
    capture (flows before the cut are kept) or one without IP flows.
    """
    name = str(path)
    info = inspect_capture(path)
    problems: list[Problem] = []
    if info.truncated_at is not None:
        if info.packets == 0:
            raise InputError(name, f"truncated {info.format}: cut at byte {info.truncated_at} "
                                   "before the first whole packet")
        problems.append(Problem(
            name,
            f"truncated {info.format}: last record cut at byte {info.truncated_at}; "
            f"flows of the {info.packets} whole packets before the cut were kept",
            "warning",
        ))
    if not info.has_ip_linktype:
        problems.append(Problem(
            name,
            f"no IP flows: link type {info.linktype_names()} carries no IP that NFStream decodes",
            "notice",
        ))
        return empty_flows(), problems
    streamer = _streamer(name, n_meters=n_meters, idle_timeout=idle_timeout,
                         active_timeout=active_timeout)
    try:
        rows = [_GET(flow) for flow in streamer]  # type: ignore[attr-defined]
    except ValueError as exc:
        raise InputError(name, f"NFStream could not read it: {exc}") from None
    if not rows and info.packets:
        problems.append(Problem(name, f"no IP flows in {info.packets} packets", "notice"))
    return _rows_to_frame(rows, name), problems


def read_source_file(path: str, **kwargs: int) -> tuple[pl.DataFrame, list[Problem]]:
    """Read one file, capture or Zeek log; never raises for bad input (returns a problem)."""
    try:
        p = Path(path)
        if not is_capture_name(p) and p.is_file() and looks_like_zeek(p):
            return read_zeek_conn(p), []
        return read_capture(path, **kwargs)
    except InputError as exc:
        return empty_flows(), [Problem(exc.source, exc.problem)]


def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """Files to read: files as given, folders searched recursively for captures and Zeek logs."""
    files: list[str] = []
    problems: list[Problem] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*")
                if f.is_file() and (is_capture_name(f) or (f.suffix == ".log" and looks_like_zeek(f)))
            )
            if not found:
                problems.append(Problem(str(src), "folder holds no captures (.pcap, .pcapng, .cap) "
                                        "or Zeek conn logs"))
            files.extend(found)
        elif p.exists():
            files.append(str(src))
        else:
            problems.append(Problem(str(src), "no such file or folder"))
    return list(dict.fromkeys(files)), problems


def extract(
    sources: Sequence[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    idle_timeout: int = IDLE_TIMEOUT_S,
    active_timeout: int = ACTIVE_TIMEOUT_S,
    on_file: Callable[[str], None] | None = None,
) -> ExtractResult:
    """Read every capture and Zeek log under ``sources`` into one flow table.

    Files are read in parallel processes when there are several (``workers`` defaults to the
    number of CPUs); a single large capture gets NFStream's own metering processes instead.
    ``on_file`` is called once per finished file (progress bars).
    """
    files, problems = expand_sources(sources)
    kwargs = {"idle_timeout": idle_timeout, "active_timeout": active_timeout}
    workers = workers or os.cpu_count() or 1
    results: dict[str, tuple[pl.DataFrame, list[Problem]]] = {}
    if len(files) == 1:
        results[files[0]] = read_source_file(files[0], n_meters=0, **kwargs)
        if on_file:
            on_file(files[0])
    elif workers <= 1 or len(files) < 4:
        for f in files:
            results[f] = read_source_file(f, **kwargs)
            if on_file:
                on_file(f)
    else:
        # Threads, not processes: NFStream meters each file in a process of its own already,
        # and nesting process pools under its forked meters deadlocks.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(read_source_file, f, **kwargs): f for f in files}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if on_file:
                    on_file(futures[fut])
    frames = []
    for f in files:
        df, probs = results[f]
        frames.append(df)
        problems.extend(probs)
    flows = pl.concat(frames) if frames else empty_flows()
    return ExtractResult(flows=flows, files=files, problems=problems)


def check_interface(interface: str) -> None:
    """Raise ``InputError`` when ``interface`` does not exist or cannot be captured on."""
    if not Path("/sys/class/net", interface).exists():
        raise InputError(interface, "no such network interface")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        # libpcap needs CAP_NET_RAW; without root say so before NFStream fails obscurely.
        try:
            import socket

            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.close()
        except PermissionError:
            raise InputError(interface, "no permission to capture (run as root or grant "
                                        "CAP_NET_RAW)") from None


class LiveCapture:
    """Flows from a live interface, as FLOW_SCHEMA batches, until stopped.

    NFStream's metering runs in its own processes; flows arrive when they expire (idle or
    active timeout), so a short ``idle_timeout`` gives timely flows. ``stop()`` waits
    ``drain_s`` for pending flows to expire before it ends the capture.
    """

    def __init__(self, interface: str, *, idle_timeout: int = 10, active_timeout: int = 120,
                 bpf_filter: str | None = None) -> None:
        check_interface(interface)
        self.interface = interface
        self.idle_timeout = idle_timeout
        self.active_timeout = active_timeout
        self.bpf_filter = bpf_filter
        self._queue: queue.Queue[tuple[object, ...] | BaseException | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._streamer: object | None = None
        self.flows_seen = 0

    def start(self) -> LiveCapture:
        self._streamer = _streamer(
            self.interface, n_meters=1, idle_timeout=self.idle_timeout,
            active_timeout=self.active_timeout, bpf_filter=self.bpf_filter,
        )
        self._thread = threading.Thread(target=self._pump, name="nfstream", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        try:
            for flow in self._streamer:  # type: ignore[attr-defined]
                self._queue.put(_GET(flow))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._queue.put(exc)
        self._queue.put(None)

    def batches(self, timeout: float = 1.0) -> Iterator[pl.DataFrame]:
        """Yield a (possibly empty) flow batch about every ``timeout`` seconds."""
        while True:
            rows: list[tuple[object, ...]] = []
            deadline = time.monotonic() + timeout
            ended = False
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    ended = True
                    break
                if isinstance(item, BaseException):
                    raise InputError(self.interface, f"capture failed: {item}")
                rows.append(item)
            self.flows_seen += len(rows)
            yield _rows_to_frame(rows, self.interface)
            if ended:
                return

    def stop(self) -> None:
        """End the capture: NFStream's metering processes are terminated."""
        import multiprocessing

        for child in multiprocessing.active_children():
            child.terminate()

    def dropped(self) -> int:
        """Packets the kernel dropped, when NFStream reports it (0 when unknown)."""
        return 0


def capture_interface(interface: str, duration: float, *, idle_timeout: int = 5,
                      active_timeout: int = ACTIVE_TIMEOUT_S,
                      should_stop: Callable[[], bool] | None = None) -> pl.DataFrame:
    """Capture ``interface`` for ``duration`` seconds, then wait for open flows to expire.

    Flows still active ``idle_timeout`` seconds after the end are not reported.
    """
    cap = LiveCapture(interface, idle_timeout=idle_timeout, active_timeout=active_timeout).start()
    frames = []
    end = time.monotonic() + duration + idle_timeout + 1.5
    try:
        for batch in cap.batches(timeout=0.5):
            if batch.height:
                frames.append(batch)
            if time.monotonic() >= end or (should_stop and should_stop()):
                break
    finally:
        cap.stop()
    return pl.concat(frames) if frames else empty_flows()

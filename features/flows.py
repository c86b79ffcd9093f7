"""Any traffic source -> a ``FLOW_SCHEMA`` flow table.

Sources: pcap/pcapng files and folders of them (NFStream with nDPI), a live interface
(NFStream, needs capture rights), Zeek ``conn.log`` files. ``extract`` is the one entry point
for files and folders; it goes on past bad inputs and reports each in ``ExtractResult.problems``.
Reading one capture is a pure step (path -> table), so a pool or a distributed engine can map it.
"""

from __future__ import annotations

import operator
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from flockwatch.features.captures import CaptureInfo, inspect_capture, is_capture_name
from flockwatch.features.errors import InputError
from flockwatch.features.orient import orient
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
    head = inspect_capture(path, walk=False)
    if not head.has_ip_linktype:
        return empty_flows(), [Problem(
            name,
            f"no IP flows: link type {head.linktype_names()} carries no IP that NFStream decodes",
            "notice",
        )]
    # Walking every record header for truncation costs ~0.5 us a packet: do it while NFStream
    # meters the file (its work happens in its own process).
    walked: list[CaptureInfo | BaseException] = [head] if head.packets >= 0 else []
    walker = threading.Thread(target=_walk, args=(path, walked), daemon=True)
    if not walked:
        walker.start()
    streamer = _streamer(name, n_meters=n_meters, idle_timeout=idle_timeout,
                         active_timeout=active_timeout)
    try:
        rows = [_GET(flow) for flow in streamer]  # type: ignore[attr-defined]
    except ValueError as exc:
        raise InputError(name, f"NFStream could not read it: {exc}") from None
    finally:
        if walker.is_alive():
            walker.join()
    info = walked[0]
    if isinstance(info, BaseException):
        raise info
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
    if not rows and info.packets:
        problems.append(Problem(name, f"no IP flows in {info.packets} packets", "notice"))
    return orient(_rows_to_frame(rows, name)), problems


def _walk(path: str | os.PathLike[str], out: list[CaptureInfo | BaseException]) -> None:
    try:
        out.append(inspect_capture(path))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        out.append(exc)


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
                if f.is_file()
                and (is_capture_name(f) or (f.suffix == ".log" and looks_like_zeek(f)))
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
    on_start: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Read every capture and Zeek log under ``sources`` into one flow table.

    Files are read in parallel processes when there are several (``workers`` defaults to the
    number of CPUs); a single large capture gets NFStream's own metering processes instead.
    ``on_start(n_files)`` is called once the inputs are listed and ``on_file`` once per
    finished file (progress bars).
    """
    files, problems = expand_sources(sources)
    if on_start:
        on_start(len(files))
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

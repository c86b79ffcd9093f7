"""Any traffic source -> a ``FLOW_SCHEMA`` flow table.

Sources: pcap/pcapng files and folders of them (NFStream with nDPI), a live interface
(NFStream, needs capture rights), Zeek ``conn.log`` files. ``extract`` is the one entry point
for files and folders; it goes on past bad inputs and reports each in ``ExtractResult.problems``.
Reading one capture is a pure step (path -> table), so a pool or a distributed engine can map it.
"""

from __future__ import annotations

import atexit
import operator
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from flockwatch.features.announce import attach_announcements
from flockwatch.features.captures import (
    IP_LINKTYPES,
    CaptureInfo,
    inspect_capture,
    is_capture_name,
    write_repaired,
)
from flockwatch.features.errors import InputError, stat_input
from flockwatch.features.errors import Problem as Problem  # re-exported: ExtractResult.problems
from flockwatch.features.orient import orient
from flockwatch.features.payload import (  # the flow cuts: defined there, re-exported here
    ACTIVE_TIMEOUT_S as ACTIVE_TIMEOUT_S,
)
from flockwatch.features.payload import (
    IDLE_TIMEOUT_S as IDLE_TIMEOUT_S,
)
from flockwatch.features.payload import (
    Scan,
    attach_payload,
    inspect_and_scan,
    inspect_and_scan_portable,
    scan_capture,
)
from flockwatch.features.schema import FLOW_SCHEMA, conform, empty_flows
from flockwatch.features.zeek import looks_like_zeek, read_zeek_conn

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
    try:
        raw = pl.DataFrame(rows, schema=_RAW_SCHEMA, orient="row")
    except (pl.exceptions.ComputeError, OverflowError) as exc:
        # Whatever the repairs miss (a time NFStream wrapped) must not become a traceback.
        raise InputError(source, "NFStream gave values out of range: "
                                 f"{str(exc).splitlines()[0]}") from None
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


#: Flows converted from NFStream's objects to a frame at a time (``flow_batches``).
BATCH_FLOWS = 16_384


def flow_batches(streamer: Iterable[object], source: str, size: int | None = None
                 ) -> Iterator[pl.DataFrame]:
    """NFStream's flows as ``FLOW_SCHEMA`` frames of ``size`` flows, in the order it emits
    them. A flow held as a tuple of Python objects costs about five times its row in a frame:
    converting a batch at a time keeps that cost to one batch, not the whole capture."""
    size = size or BATCH_FLOWS
    rows: list[tuple[object, ...]] = []
    for flow in streamer:
        rows.append(_GET(flow))
        if len(rows) >= size:
            yield _rows_to_frame(rows, source)
            rows = []
    if rows:
        yield _rows_to_frame(rows, source)


def read_capture(
    path: str | os.PathLike[str],
    *,
    idle_timeout: int = IDLE_TIMEOUT_S,
    active_timeout: int = ACTIVE_TIMEOUT_S,
    n_meters: int = 1,
    announcements: bool = True,
    payload: bool = True,
) -> tuple[pl.DataFrame, list[Problem]]:
    """Read one pcap/pcapng file into a flow table.

    With ``announcements`` and ``payload`` (the defaults) a pass of its own over the file
    (``features.payload``), run while NFStream meters it, fills the ``announcements`` column
    (``features.announce``), the ``payload`` column and the industrial ones; without either,
    those columns are null (benchmarks compare).

    Raises ``InputError`` when the file is no usable capture; returns notices for a truncated
    capture (flows before the cut are kept) or one without IP flows. Records libpcap would
    lose or garble (see ``features.captures``) are read from a repaired copy in a temporary
    folder instead, and each kind repaired or skipped is a warning with its count.
    """
    name = str(path)
    head = inspect_capture(path, walk=False)
    if not head.has_ip_linktype:
        info = head if head.packets >= 0 else inspect_capture(path)
        return empty_flows(), [Problem(
            name,
            f"no IP flows: link type {head.linktype_names()} carries no IP that NFStream decodes "
            f"({info.packets} packets not read)",
            "notice",
            info.packets,
        )]

    def meter(source: str) -> tuple[list[pl.DataFrame], str | None]:
        streamer = _streamer(source, n_meters=n_meters, idle_timeout=idle_timeout,
                             active_timeout=active_timeout)
        try:
            return list(flow_batches(streamer, name)), None  # type: ignore[arg-type]
        except ValueError as exc:  # a file libpcap refuses: a repaired copy may still do
            return [], str(exc)

    # The payload pass (announcements included) reads the original file with the framing
    # walk that writes the repaired copies, so it sees the packets NFStream reads, repaired or
    # not. It runs while NFStream meters, after the walk of a pcap (one mapping of the file
    # at a time).
    passing = announcements or payload
    said: list[Scan | BaseException] = []
    scan_args = {"announcements": announcements, "payload": payload,
                 "idle_timeout": idle_timeout, "active_timeout": active_timeout}
    announcer = threading.Thread(target=_announce, args=(path, said, scan_args), daemon=True)
    rows: list[pl.DataFrame] = []
    failed: str | None = None
    if head.packets >= 0:  # pcapng: walked already
        info = head
        if passing:
            announcer.start()
        if not info.needs_repair:
            rows, failed = meter(name)
    else:
        # Walking every record header costs ~0.5 us a packet: do it while NFStream meters the
        # file (its work happens in its own process), together with the payload pass; a
        # capture that needs repair, which the walk tells only at its end, is read a second
        # time from the repaired copy.
        walked: list[CaptureInfo | BaseException] = []
        pending = _pass_in_process(path, scan_args) if passing else None
        walker = threading.Thread(target=_walk, args=(path, walked, said if passing else None,
                                                      scan_args), daemon=True)
        if pending is None:
            walker.start()
        try:
            rows, failed = meter(name)
        finally:
            if pending is None:
                walker.join()
            else:
                _pass_result(pending, path, scan_args, walked, said)
        if isinstance(walked[0], BaseException):
            raise walked[0]
        info = walked[0]
    problems: list[Problem] = []
    if info.needs_repair:
        rows, failed, problems = _read_repaired(path, info, meter)
    if failed is not None:
        raise InputError(name, f"NFStream could not read it: {failed}")
    if info.truncated_at is not None:
        at = info.truncated_at
        if info.packets == 0:
            raise InputError(name, f"{'truncated' if info.stop == 'cut' else 'corrupt'} "
                             f"{info.format}: stops at byte {at}, before the first whole packet")
        if info.stop == "cut":
            message = (f"truncated {info.format}: the record at byte {at} runs past the end of "
                       f"the file ({info.size} bytes); flows of the {info.packets} whole packets "
                       "before it were kept")
        else:
            message = (f"corrupt {info.format}: the block at byte {at} has an impossible length "
                       f"or byte order; flows of the {info.packets} packets before it were kept, "
                       f"the last {info.size - at} bytes were not read")
        problems.append(Problem(name, message, "warning"))
    problems.extend(Problem(name, str(r), "warning", r.count if r.skipped else 0)
                    for r in info.repairs)
    read = info.packets - sum(p.skipped for p in problems)
    if not rows and read > 0:
        problems.append(Problem(name, f"no IP flows in {read} packets", "notice"))
    flows = orient(pl.concat(rows) if rows else empty_flows())
    if passing:
        if announcer.ident is not None:  # started (pcapng); a pcap's walker did it
            announcer.join()
        scan = said[0]
        if isinstance(scan, BaseException):
            raise scan
        # after ``orient``: its flips decide which endpoint is ``src``
        flows = attach_announcements(flows, scan.announcements)
        flows = attach_payload(flows, scan.segments)
    return flows, problems


def _read_repaired(
    path: str | os.PathLike[str], info: CaptureInfo,
    meter: Callable[[str], tuple[list[pl.DataFrame], str | None]],
) -> tuple[list[pl.DataFrame], str | None, list[Problem]]:
    """Meter the repaired copy of ``path`` (one file per link type) and say what was left."""
    name = str(path)
    rows: list[pl.DataFrame] = []
    problems: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="flockwatch-repair-") as tmp:
        try:
            parts = write_repaired(path, info, tmp)
        except OSError as exc:
            raise InputError(name, f"cannot write its repaired copy: {exc}") from None
        for part in parts:
            if part.linktype not in IP_LINKTYPES:
                problems.append(Problem(
                    name, f"{part.packets} packets on interfaces of link type "
                    f"{part.linktype} carry no IP that NFStream decodes; not read",
                    "notice", part.packets))
                continue
            part_rows, failed = meter(str(part.path))
            if failed is not None:
                return rows, failed, problems
            rows.extend(part_rows)
    return rows, None, problems


#: Captures from this size on have their walk and payload pass run in a process of its own:
#: in a thread, its pure-Python loop and the reading of NFStream's flows (Python too) take
#: turns on one interpreter lock, so the pass added its whole time (1.1 s of 7.2 s for 571,000
#: packets). A process costs a start (~0.3 s, once: it is kept) and the results' transfer.
PASS_PROCESS_BYTES = 32 * 1024 * 1024
_pass_pool: Any = None
_pass_pool_lock = threading.Lock()


def _pass_in_process(path: str | os.PathLike[str], scan_args: dict[str, Any]) -> Any:
    """A future of ``inspect_and_scan_portable`` in the pass process, or None: a small
    capture (the thread is cheaper), or no process to be had (a daemonic worker cannot
    start one)."""
    global _pass_pool
    try:
        if os.stat(path).st_size < PASS_PROCESS_BYTES:
            return None
        with _pass_pool_lock:
            if _pass_pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                _pass_pool = ProcessPoolExecutor(
                    max_workers=min(2, os.cpu_count() or 1),
                    mp_context=multiprocessing.get_context("spawn"))
                # closed before the interpreter tears modules down (else the pool's own
                # clean-up can print an ignored exception at exit)
                atexit.register(_pass_pool.shutdown, wait=True)
            return _pass_pool.submit(inspect_and_scan_portable, str(path), dict(scan_args))
    except (OSError, RuntimeError, AssertionError, ValueError):
        return None


def _pass_result(pending: Any, path: str | os.PathLike[str], scan_args: dict[str, Any],
                 walked: list[CaptureInfo | BaseException],
                 said: list[Scan | BaseException]) -> None:
    """The pass process's answer into ``walked`` and ``said``, as ``_walk`` leaves them; the
    pass is run here instead when the process failed (the pool is then started afresh)."""
    global _pass_pool
    try:
        got = pending.result()
    except Exception:  # a broken pool (a killed worker): not the capture's fault
        with _pass_pool_lock:
            _pass_pool = None
        _walk(path, walked, said, scan_args)
        return
    if isinstance(got[0], str):  # an InputError, as (source, problem)
        err = InputError(got[0], str(got[1]))
        walked.append(err)
        said.append(err)
    else:
        walked.append(got[0])
        said.append(got[1])


def _walk(path: str | os.PathLike[str], out: list[CaptureInfo | BaseException],
          said: list[Scan | BaseException] | None = None,
          scan_args: dict[str, Any] | None = None) -> None:
    if said is not None:  # the walk and the payload pass in one (``inspect_and_scan``)
        try:
            info, scan = inspect_and_scan(path, **(scan_args or {}))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            out.append(exc)
            said.append(exc)
            return
        out.append(info)
        said.append(scan)
        return
    try:
        out.append(inspect_capture(path))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        out.append(exc)


def _announce(path: str | os.PathLike[str], out: list[Scan | BaseException],
              scan_args: dict[str, Any]) -> None:
    try:
        out.append(scan_capture(path, **scan_args))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
        out.append(exc)


def read_source_file(path: str, **kwargs: Any) -> tuple[pl.DataFrame, list[Problem]]:
    """Read one file, capture or Zeek log; never raises for bad input (returns a problem)."""
    try:
        p = Path(path)
        if not is_capture_name(p) and p.is_file() and looks_like_zeek(p, loose=True):
            return read_zeek_conn(p)
        return read_capture(path, **kwargs)
    except InputError as exc:
        return empty_flows(), [Problem(exc.source, exc.problem)]


def expand_sources(sources: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """Files to read: files as given, folders searched recursively for captures and Zeek logs.

    What cannot be searched or read (a folder without permission, a capture name that is a
    broken link or a FIFO) is a problem of its own, never a silent gap in the batch.
    """
    files: list[str] = []
    problems: list[Problem] = []
    for src in sources:
        try:
            st = stat_input(src, folders=True)
        except InputError as exc:
            problems.append(Problem(exc.source, exc.problem))
            continue
        if stat.S_ISDIR(st.st_mode):
            found, bad = _search_folder(str(src))
            if not found and not bad:
                problems.append(Problem(str(src), "folder holds no captures (.pcap, .pcapng, .cap) "
                                        "or Zeek conn logs"))
            files.extend(found)
            problems.extend(bad)
        else:
            files.append(str(src))
    return list(dict.fromkeys(files)), problems


def _search_folder(root: str) -> tuple[list[str], list[Problem]]:
    found: list[str] = []
    bad: list[Problem] = []
    seen: set[tuple[int, int]] = set()

    def refused(exc: OSError) -> None:
        bad.append(Problem(str(exc.filename), f"folder not searched: {exc.strerror or exc}"))

    for folder, dirs, names in os.walk(root, onerror=refused, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for n in sorted(names):
            f = Path(folder, n)
            if not (is_capture_name(f) or f.suffix == ".log"):
                continue
            try:
                stat_input(f)
            except InputError as exc:
                bad.append(Problem(exc.source, exc.problem))
                continue
            if f.suffix == ".log" and not os.access(f, os.R_OK):
                bad.append(Problem(str(f), "permission denied"))
            elif is_capture_name(f) or looks_like_zeek(f):
                found.append(str(f))
    return sorted(found), bad


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

    Files are read by parallel threads when there are several (``workers`` defaults to the
    number of CPUs; each NFStream meters in processes of its own); a single large capture
    gets NFStream's several metering processes instead.
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

"""Running flockwatch's pure steps on a Dask cluster: the ``--cluster ADDRESS`` switch.

``tcp://host:8786`` (or ``tls://``) connects to a running Dask distributed scheduler;
``local`` or ``local:N`` starts a ``distributed.LocalCluster`` of N worker processes with one
thread each (NFStream meters in processes of its own, and LightGBM trains one thread a model:
one core a worker). Without it, every command runs in-process as before. Here, in the base
layer, because the step that is mapped first ("a capture -> its flow table") is in
``features``; ``datasets``, ``training`` and ``serving`` map their own pure steps with
``map_files``. Dask is imported inside the functions: ``flockwatch --help`` never loads it.

Captures are batched into tasks (``plan_batches``): NFStream's start-up costs about 40 ms a
file, and a task costs the scheduler about 1 ms, so many small captures go in one task and a
large capture is a task of its own (not split: NFStream's flows cross any cut in time, so a
cut capture would not give the same flow table). Tasks are submitted with ``retries``: a
worker that dies mid-task has its tasks run again elsewhere, and the results come back in
input order whatever order the tasks finish in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

#: The environment variable the ``--cluster`` option reads when it is not given.
CLUSTER_ENV = "FLOCKWATCH_CLUSTER"
#: Seconds to reach a scheduler before giving up with one line, not a hang.
CONNECT_TIMEOUT_S = 10.0
#: A task holds captures up to this many bytes together (a capture this large or larger is a
#: task alone): at ~20 MB/s of NFStream a worker, ~3 s a task, long against the scheduler's
#: ~1 ms a task and short enough that a lost worker costs little to redo.
BATCH_BYTES = 64 << 20
#: ... and at most this many captures (NFStream's start-up, ~40 ms each, then dominates).
BATCH_FILES = 32
#: Tasks a worker gets at least, where there are inputs enough: a batch of 32 captures on
#: one of two workers would leave the other idle at the end.
TASKS_PER_WORKER = 4
#: Times a task is run again after its worker died or it failed.
RETRIES = 3

R = TypeVar("R")


class ClusterError(Exception):
    """A cluster that cannot be reached or used; ``str(err)`` is ``"<address>: <problem>"``."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(f"{address}: {problem}")
        self.address = address
        self.problem = problem


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster`` value: a scheduler ``address``, or ``local_workers`` to start."""

    text: str
    address: str | None = None
    local_workers: int | None = None


_LOCAL = re.compile(r"local(?::(\d+))?")
_REMOTE = re.compile(r"(tcp|tls)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})/?")


def parse_cluster(text: str) -> ClusterSpec:
    """``ClusterSpec`` of ``tcp://HOST:PORT``, ``tls://HOST:PORT``, ``local`` or ``local:N``;
    raises ``ClusterError`` for anything else, before any connection is tried."""
    t = text.strip()
    m = _LOCAL.fullmatch(t)
    if m:
        n = int(m.group(1)) if m.group(1) else (os.cpu_count() or 1)
        if not 1 <= n <= 1024:
            raise ClusterError(text, f"local:N needs 1 to 1024 workers, got {n}")
        return ClusterSpec(t, local_workers=n)
    m = _REMOTE.fullmatch(t)
    if m:
        if not 0 < int(m.group(3)) < 65536:
            raise ClusterError(text, f"port {m.group(3)} is not 1-65535")
        return ClusterSpec(t, address=t.rstrip("/"))
    raise ClusterError(text, "expected tcp://HOST:PORT (a Dask scheduler) or local[:N] "
                             "(N worker processes on this machine)")


def cluster_from_env(given: str | None) -> str | None:
    """The ``--cluster`` value, else ``FLOCKWATCH_CLUSTER``, else None (in-process)."""
    value = given if given is not None else os.environ.get(CLUSTER_ENV)
    return value.strip() or None if value is not None else None


@contextlib.contextmanager
def connect(text: str, *, timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A ``distributed.Client`` on the cluster ``text`` names (``parse_cluster``), closed
    (and a local cluster shut down) on exit. An unreachable scheduler raises
    ``ClusterError`` after ``timeout`` seconds."""
    spec = parse_cluster(text)
    import dask
    from distributed import Client, LocalCluster

    # NFStream meters in child processes, which a daemonic process may not start: local
    # workers are started non-daemonic (remote ones are adopted in ``_run_batch``).
    settings = {"distributed.worker.daemon": False,
                "distributed.comm.timeouts.connect": f"{timeout:g}s",
                "distributed.scheduler.allowed-failures": RETRIES}
    with dask.config.set(settings):
        if spec.local_workers is not None:
            try:
                cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=spec.local_workers, threads_per_worker=1, processes=True,
                    dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL)
            except Exception as exc:
                raise ClusterError(text, f"cannot start a local cluster: {exc}") from None
            with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
                client.run(_warm)
                yield client
            return
        assert spec.address is not None
        try:
            # Client's own timeout covers the TCP connection, not a peer that accepts and
            # never answers (it waits for ever there): a scheduler must answer first.
            asyncio.run(asyncio.wait_for(_identity(spec.address, timeout), timeout))
            client = Client(spec.address, timeout=timeout)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError) as exc:
            raise ClusterError(text, f"no Dask scheduler answered within {timeout:g} s "
                                     f"({_reason(exc)})") from None
        with client:
            client.run(_warm)
            yield client


def _warm() -> None:
    """Import the extraction's modules on a worker as it joins, not in its first task
    (measured: the first task of ten captures took 1.8 s, the next 1.0 s)."""
    import nfstream  # noqa: F401

    import flockwatch.features.flows  # noqa: F401
    import flockwatch.features.windows  # noqa: F401


async def _identity(address: str, timeout: float) -> Any:
    """The scheduler's answer to ``identity``: the one message any Dask server answers."""
    from distributed.comm.core import connect as comm_connect
    from distributed.security import Security

    args = Security().get_connection_args("client")  # type: ignore[no-untyped-call]
    comm = await comm_connect(address, timeout=timeout, **args)  # type: ignore[no-untyped-call]
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        await comm.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else "no answer"
    return text[:200]


def dashboard(client: Any) -> str | None:
    """The Dask dashboard's address, None when the cluster serves none (no bokeh)."""
    link = getattr(client, "dashboard_link", None)
    try:
        import bokeh  # noqa: F401 - the dashboard needs it
    except ImportError:
        return None
    return str(link) if link else None


def plan_batches(sizes: Sequence[int], *, batch_bytes: int = BATCH_BYTES,
                 batch_files: int = BATCH_FILES) -> list[list[int]]:
    """Indices of the inputs, in order, cut into tasks: consecutive inputs together until
    their bytes reach ``batch_bytes`` or their number ``batch_files``; an input as large as
    ``batch_bytes`` alone."""
    batches: list[list[int]] = []
    cur: list[int] = []
    held = 0
    for i, size in enumerate(sizes):
        if size >= batch_bytes:
            if cur:
                batches.append(cur)
                cur, held = [], 0
            batches.append([i])
            continue
        cur.append(i)
        held += size
        if held >= batch_bytes or len(cur) >= batch_files:
            batches.append(cur)
            cur, held = [], 0
    if cur:
        batches.append(cur)
    return batches


def file_size(path: str) -> int:
    """Bytes of ``path`` as this machine sees it (0 when it cannot: a remote cluster may see
    paths the client does not)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def allow_children() -> None:
    """Let this process start NFStream's metering processes: a worker started by a nanny
    without ``distributed.worker.daemon: False`` (a remote cluster's) is daemonic, and
    multiprocessing refuses children to a daemonic process; the worker's children end with it
    either way, so the flag only guards against orphans. A no-op elsewhere."""
    proc = multiprocessing.current_process()
    if proc.daemon:
        proc._config["daemon"] = False  # type: ignore[attr-defined]


def _run_batch(fn: Callable[[str], R], items: list[str]) -> list[R]:
    """``fn`` over a task's inputs, on a worker."""
    allow_children()
    return [fn(item) for item in items]


def map_files(client: Any, fn: Callable[[str], R], items: Sequence[str], *,
              sizes: Sequence[int] | None = None, on_item: Callable[[str], None] | None = None,
              on_tasks: Callable[[int, int], None] | None = None,
              retries: int = RETRIES, batch_bytes: int = BATCH_BYTES,
              batch_files: int = BATCH_FILES) -> list[R]:
    """``[fn(item) for item in items]`` computed on the cluster, in ``items`` order.

    ``fn`` must be a pure, picklable function of one input (a module-level function or a
    ``functools.partial`` of one). Inputs are batched into tasks by ``sizes`` (default: the
    files' sizes here, ``plan_batches``). ``on_item`` hears of each input as its task ends,
    ``on_tasks(done, total)`` of each task. A task whose worker dies is run again (up to
    ``retries`` times) on another; one that still fails raises ``ClusterError``.
    """
    from distributed import as_completed

    if not items:
        return []
    sizes = list(sizes) if sizes is not None else [file_size(i) for i in items]
    # Enough tasks to keep every worker busy to the end: at least TASKS_PER_WORKER each.
    n_workers = max(1, len(client.nthreads()))
    batch_files = max(1, min(batch_files, -(-len(items) // (n_workers * TASKS_PER_WORKER))))
    batches = plan_batches(sizes, batch_bytes=batch_bytes, batch_files=batch_files)
    futures = {client.submit(_run_batch, fn, [items[i] for i in b], retries=retries,
                             pure=False): b for b in batches}
    if on_tasks:
        on_tasks(0, len(batches))
    out: list[Any] = [None] * len(items)
    done = 0
    try:
        for fut in as_completed(list(futures)):  # type: ignore[no-untyped-call]
            try:
                res = fut.result()
            except Exception as exc:
                from distributed.scheduler import KilledWorker

                if isinstance(exc, KilledWorker):
                    raise ClusterError(_address(client), "a task's workers kept dying "
                                       f"({retries + 1} tries): {_reason(exc)}") from None
                raise
            batch = futures[fut]
            for i, r in zip(batch, res, strict=True):
                out[i] = r
                if on_item:
                    on_item(items[i])
            done += 1
            if on_tasks:
                on_tasks(done, len(batches))
    finally:
        client.cancel(list(futures))
    return out


def _address(client: Any) -> str:
    try:
        return str(client.scheduler.address)
    except Exception:  # noqa: BLE001 - only for a message
        return "cluster"


def extract_on(client: Any, sources: Sequence[str | os.PathLike[str]], *,
               on_start: Callable[[int], None] | None = None,
               on_file: Callable[[str], None] | None = None,
               on_tasks: Callable[[int, int], None] | None = None, **kwargs: Any) -> Any:
    """``features.flows.extract`` with each input read on the cluster: the same
    ``ExtractResult`` (flows in input order, every worker's problems in the one list)."""
    import polars as pl

    from flockwatch.features.flows import ExtractResult, expand_sources, read_source_file
    from flockwatch.features.schema import empty_flows

    files, problems = expand_sources(sources)
    if on_start:
        on_start(len(files))
    results = map_files(client, bound(read_source_file, **kwargs), files, on_item=on_file,
                        on_tasks=on_tasks)
    frames = []
    for df, probs in results:
        frames.append(df)
        problems.extend(probs)
    flows = pl.concat(frames) if frames else empty_flows()
    return ExtractResult(flows=flows, files=files, problems=problems)


def _windows_of(flows: Any, spec: Any) -> Any:
    from flockwatch.features.windows import windows

    return windows(flows, spec)


def windows_on(client: Any, flows: Any, spec: Any, *, tasks_per_worker: int = 4) -> Any:
    """``features.windows.windows(flows, spec)`` computed by the cluster's workers: the
    sources are cut into about ``tasks_per_worker`` tasks a worker (windows and device
    attribution are per source, so any cut along sources gives the same rows), and the
    windows come back in ``windows``' own order."""
    import polars as pl

    from flockwatch.features.windows import KEY_COLUMNS, empty_windows

    if flows.height == 0:
        return empty_windows()
    parts = flows.partition_by("source", maintain_order=True)
    n_workers = max(1, len(client.nthreads()))
    target = max(1, flows.height // (n_workers * tasks_per_worker))
    groups: list[list[Any]] = [[]]
    rows = 0
    for p in parts:
        if rows >= target:
            groups.append([])
            rows = 0
        groups[-1].append(p)
        rows += p.height
    data = client.scatter([pl.concat(g) for g in groups])
    futures = client.map(_windows_of, data, spec=spec, retries=RETRIES, pure=False)
    out = pl.concat(client.gather(futures), how="vertical_relaxed")
    return out.sort(KEY_COLUMNS)


def worker_pids(client: Any) -> dict[str, int]:
    """Worker address -> process id (benchmarks read memory, tests kill a worker)."""
    return dict(client.run(os.getpid))


def bound(fn: Callable[..., R], **kwargs: Any) -> Callable[[str], R]:
    """``fn`` with keyword arguments fixed: a picklable one-input step for ``map_files``."""
    return functools.partial(fn, **kwargs) if kwargs else fn


__all__ = ["BATCH_BYTES", "BATCH_FILES", "CLUSTER_ENV", "CONNECT_TIMEOUT_S", "RETRIES",
           "TASKS_PER_WORKER", "ClusterError", "ClusterSpec", "allow_children", "bound",
           "cluster_from_env", "connect", "dashboard", "extract_on", "file_size", "map_files",
           "parse_cluster", "plan_batches", "windows_on", "worker_pids"]

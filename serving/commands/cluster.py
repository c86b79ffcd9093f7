"""The ``--cluster ADDRESS`` option every batch command shares, and its session: the
connection (an unreachable scheduler fails in one line within ``CONNECT_TIMEOUT_S``), the
dashboard's address printed at the start, a progress bar over the cluster's tasks, and the
batch read on the workers. Without the option (and without ``FLOCKWATCH_CLUSTER``) nothing
here imports Dask and the command runs in-process as before."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import typer

from flockwatch.serving.commands.common import fail
from flockwatch.serving.progress import console

ClusterOpt = Annotated[str | None, typer.Option(
    "--cluster", envvar="FLOCKWATCH_CLUSTER", metavar="ADDRESS",
    help="Run on a Dask cluster: tcp://HOST:PORT (a running scheduler) or local[:N] (N worker "
         "processes here). Default: in-process. See docs/scaling.md.")]


@contextlib.contextmanager
def cluster_session(address: str | None, quiet: bool = False) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (None: yields None, in-process), the
    dashboard's address on stderr; a cluster that cannot be reached or started fails the
    command in one line."""
    from flockwatch.features.cluster import ClusterError, cluster_from_env, connect, dashboard

    address = cluster_from_env(address)
    if address is None:
        yield None
        return
    stack = contextlib.ExitStack()
    try:
        client = stack.enter_context(connect(address))
    except ClusterError as exc:
        fail(f"--cluster {exc}")
    with stack:
        if not quiet:
            link = dashboard(client)
            workers = len(client.nthreads())
            console().print(f"cluster {address}: {workers} worker(s); dashboard "
                            f"{link or 'not served (install bokeh)'}", highlight=False)
        try:
            yield client
        except ClusterError as exc:
            fail(exc)


@contextlib.contextmanager
def tasks_bar(quiet: bool = False, label: str = "reading"
              ) -> Iterator[tuple[Callable[[int], None], Callable[[str], None],
                                  Callable[[int, int], None]]]:
    """``(on_start, on_file, on_tasks)``: a bar over the cluster's tasks, with the inputs
    they have read and the last one's name beside it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tasks"), TextColumn("{task.fields[files]}"), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=out,
                  disable=quiet or not out.is_terminal, transient=True) as progress:
        task = progress.add_task("", total=None, files="")
        state = {"files": 0, "total": 0}

        def start(n: int) -> None:
            state["total"] = n

        def tick(name: str) -> None:
            state["files"] += 1
            progress.update(task, description=os.path.basename(name)[-40:],
                            files=f"{state['files']}/{state['total']} files")

        def tasks(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield start, tick, tasks


def read_sources(client: Any, sources: Sequence[Any], quiet: bool = False,
                 **kwargs: Any) -> Any:
    """``extract_with_progress`` on the cluster (``client``), or in-process without one."""
    if client is None:
        from flockwatch.serving.progress import extract_with_progress

        return extract_with_progress(sources, quiet=quiet, **kwargs)
    from flockwatch.features.cluster import extract_on

    with tasks_bar(quiet) as (start, tick, tasks):
        return extract_on(client, sources, on_start=start, on_file=tick, on_tasks=tasks,
                          **kwargs)


def extract_to_folder(client: Any, sources: Sequence[Any], output: str, quiet: bool = False,
                      **kwargs: Any) -> tuple[Any, int, int]:
    """Extract into the partitioned dataset ``output`` (``features.flowset``): on the
    cluster, each worker writes the parts of its captures; in-process, the flows are read
    as ``extract`` reads them and written the same way. Returns ``(ExtractResult`` without
    flows, rows, packets)``; nothing appears at ``output`` unless the batch finished."""
    from flockwatch.features.cluster import bound, map_files
    from flockwatch.features.flows import ExtractResult, expand_sources
    from flockwatch.features.flowset import FlowsetWriter, extract_parts, write_parts
    from flockwatch.features.schema import empty_flows

    writer = FlowsetWriter(output)
    try:
        writer.check_target()
        if client is None:
            result = read_sources(None, sources, quiet, **kwargs)
            for (source,), part in result.flows.partition_by(
                    "source", as_dict=True, maintain_order=True).items():
                write_parts(part, str(source), writer.staging)
            rows, packets = result.flows.height, int(result.flows["packets"].sum() or 0)
        else:
            files, problems = expand_sources(sources)
            with tasks_bar(quiet) as (start, tick, tasks):
                start(len(files))
                written = map_files(client, bound(extract_parts, staging=writer.staging,
                                                  **kwargs), files, on_item=tick,
                                    on_tasks=tasks)
            for w in written:
                problems.extend(w.problems)
            rows = sum(w.rows for w in written)
            packets = sum(w.packets for w in written)
            result = ExtractResult(flows=empty_flows(), files=files, problems=problems)
        if not result.errors or rows:
            writer.commit(result.files, rows)
    finally:
        writer.abort()  # nothing left once committed; a failed batch leaves no staging
    return result, rows, packets

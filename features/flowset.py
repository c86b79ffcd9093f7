"""Flow tables as a partitioned Parquet dataset: one folder per capture and day.

``extract -o FOLDER`` (or any fsspec URL, e.g. ``s3://bucket/flows`` through MinIO) writes
``capture=<name>-<hash>/day=YYYY-MM-DD/part-0.parquet``, every file holding all
``FLOW_SCHEMA`` columns (``source`` included; ``capture`` and ``day`` are the partition names,
so a hive-partitioned reader gets them as two more columns without clashing). Workers write
the parts of their own captures, each part to a hidden temporary name first and then moved
into place, into a hidden staging folder beside the target; the client moves the whole
staging folder to the target at the end, after a marker file ``_flockwatch_flows.json``
(inputs, rows, extraction version). On a local disk that last move is one rename: a reader
never sees half a dataset. An object store has no rename: there the marker, written last,
says the dataset is complete (``read_flowset`` refuses a folder without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import polars as pl

from flockwatch.features.errors import Problem

MARKER = "_flockwatch_flows.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_folder_output(output: str | os.PathLike[str]) -> bool:
    """An output that names a dataset (a folder or URL), not a ``.parquet``/``.csv`` file."""
    text = os.fspath(output)
    return not text.lower().endswith((".parquet", ".csv")) and (
        "://" in text or os.path.isdir(text) or text.endswith("/") or "." not in
        PurePosixPath(text).name)


def part_name(source: str) -> str:
    """``capture=`` folder name of a source: its file name made safe, and a hash of the
    whole path (two captures of one name in two folders stay apart)."""
    stem = _SAFE.sub("_", PurePosixPath(source.replace("\\", "/")).name)[:80] or "source"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:10]}"


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return fs, str(root).rstrip("/")


@dataclass
class PartsWritten:
    """What a worker wrote for one input (the flows stay on the worker's disk)."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    rows: int = 0
    packets: int = 0
    parts: list[str] = field(default_factory=list)


def write_parts(flows: pl.DataFrame, source: str, staging: str) -> list[str]:
    """Write one input's flows under ``staging``, one part per day of ``first_seen``; each
    part written under a hidden name, then moved into place (a retried task rewrites the
    same names, so a worker that died mid-write leaves no duplicate)."""
    if flows.height == 0:
        return []
    fs, root = _fs(staging)
    days = flows.with_columns(pl.col("first_seen").dt.strftime("%Y-%m-%d").alias("_day"))
    written = []
    for (day,), part in days.partition_by("_day", as_dict=True, maintain_order=True).items():
        folder = f"{root}/capture={part_name(source)}/day={day}"
        fs.makedirs(folder, exist_ok=True)
        final = f"{folder}/part-0.parquet"
        tmp = f"{folder}/.part-0.{uuid.uuid4().hex}.tmp"
        with fs.open(tmp, "wb") as fh:
            part.drop("_day").write_parquet(fh)
        fs.mv(tmp, final)
        written.append(final)
    return written


def extract_parts(path: str, *, staging: str, **kwargs: Any) -> PartsWritten:
    """Read one input (``flows.read_source_file``) and write its parts: the worker's task
    when the output is a dataset, so flows never travel to the client."""
    from flockwatch.features.flows import read_source_file

    flows, problems = read_source_file(path, **kwargs)
    parts = write_parts(flows, path, staging)
    return PartsWritten(path, problems, flows.height, int(flows["packets"].sum() or 0), parts)


def check_target(output: str | os.PathLike[str]) -> None:
    """Raise ``OutputError`` unless ``output`` is absent, an empty folder or an earlier flow
    dataset: a folder of other files is never replaced."""
    from flockwatch.features.output import OutputError

    fs, root = _fs(os.fspath(output))
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise OutputError(output, "exists and is not a folder")
    names = [PurePosixPath(p).name for p in fs.ls(root, detail=False)]
    if names and MARKER not in names:
        raise OutputError(output, f"folder holds other files (no {MARKER}); give an empty or "
                                  "new folder for a flow dataset")


class FlowsetWriter:
    """The staging folder of one dataset output and its commit (module docstring)."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.output = os.fspath(output)
        self.fs, self.root = _fs(self.output)
        parent, name = self.root.rsplit("/", 1) if "/" in self.root else ("", self.root)
        token = uuid.uuid4().hex[:12]
        self._parent = parent
        stage = f"{parent}/.{name}.{token}.partial" if parent else f".{name}.{token}.partial"
        self._old = f"{parent}/.{name}.{token}.old" if parent else f".{name}.{token}.old"
        self.staging = self._url(stage)
        self._stage = stage
        self.fs.makedirs(stage, exist_ok=True)

    def _url(self, path: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return path if protocol in ("file", "local") else f"{protocol}://{path}"

    def check_target(self) -> None:
        check_target(self.output)

    def commit(self, files: Sequence[str], rows: int) -> None:
        """Write the marker, then put the staging folder in the target's place."""
        from flockwatch.features.schema import EXTRACTION_VERSION

        marker = {"inputs": list(files), "rows": rows, "extraction_version": EXTRACTION_VERSION,
                  "partitioning": ["capture", "day"]}
        with self.fs.open(f"{self._stage}/{MARKER}", "w") as fh:
            fh.write(json.dumps(marker, indent=2))
        self.check_target()
        had = self.fs.exists(self.root)
        if had:
            self.fs.mv(self.root, self._old, recursive=True)
        self.fs.mv(self._stage, self.root, recursive=True)
        if had:
            self.fs.rm(self._old, recursive=True)

    def abort(self) -> None:
        if self.fs.exists(self._stage):
            self.fs.rm(self._stage, recursive=True)


def read_flowset(url: str | os.PathLike[str]) -> pl.DataFrame:
    """Every flow of a dataset ``extract`` wrote, in the order of its inputs (each part's
    rows as written, its days in order). Raises ``OSError`` for a folder without the marker
    (incomplete, or not flockwatch's)."""
    from flockwatch.features.schema import empty_flows

    fs, root = _fs(os.fspath(url))
    if not fs.exists(f"{root}/{MARKER}"):
        raise OSError(f"{os.fspath(url)}: no {MARKER}: not a complete flow dataset")
    with fs.open(f"{root}/{MARKER}", "r") as fh:
        inputs = json.load(fh)["inputs"]
    frames = []
    for source in inputs:
        folder = f"{root}/capture={part_name(source)}"
        if not fs.exists(folder):
            continue
        for day in sorted(fs.ls(folder, detail=False)):
            with fs.open(f"{day}/part-0.parquet", "rb") as fh:
                frames.append(pl.read_parquet(fh))
    return pl.concat(frames) if frames else empty_flows()


__all__ = ["MARKER", "FlowsetWriter", "PartsWritten", "check_target", "extract_parts",
           "is_folder_output", "part_name", "read_flowset", "write_parts"]

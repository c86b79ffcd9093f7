"""Writing outputs atomically: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import polars as pl


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


class OutputError(OSError):
    """An output path that cannot be written; ``str(err)`` is ``"<path>: <problem>"``.

    An ``OSError`` (with the cause's ``errno``), so code that caught the OS's own error still
    catches this one."""

    def __init__(self, path: str | os.PathLike[str], problem: str,
                 errno: int | None = None) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}")
        self.path = os.fspath(path)
        self.problem = problem
        self.errno = errno


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _not_regular(target: Path) -> bool:
    """An existing device, FIFO or socket: replacing it (as root: ``/dev/null``) would
    destroy it, and writing to it is no atomic output."""
    return target.exists() and not target.is_file() and not target.is_dir()


def check_output_path(path: str | os.PathLike[str], *, folder: bool = False,
                      append: bool = False) -> None:
    """Raise ``OutputError`` now, before any work, unless ``path`` can be written: a file (or,
    with ``folder``, a folder to write files into) whose missing parent folders can be made.
    ``append`` outputs (the sensor's alert lines) may also be a FIFO or a terminal.

    Writability is tried, not guessed from mode bits (root passes ``os.access`` on ``/proc``):
    a probe file is created and removed in the nearest existing folder. Nothing else is made.
    """
    target = Path(path)
    if os.fspath(path) == "":
        raise OutputError(path, "empty path")
    if not folder and target.is_dir():
        raise OutputError(path, "is a folder; give a file name")
    if not folder and _not_regular(target):
        if append:
            return
        raise OutputError(path, "is a device, FIFO or socket, not a regular file (outputs "
                                "are written to a new file that replaces the old)")
    if folder and target.exists() and not target.is_dir():
        raise OutputError(path, "exists and is not a folder")
    if target.is_symlink() and not target.exists():
        raise OutputError(path, "is a dangling symbolic link")
    base = _nearest_existing(target if folder else target.parent)
    if not base.is_dir():
        raise OutputError(path, f"{str(base)!r} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".flockwatch-probe-", dir=base)
    except OSError as exc:
        raise OutputError(path, f"cannot create files in {str(base)!r} "
                                f"({exc.strerror or type(exc).__name__})", exc.errno) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only on success.

    The result gets the permissions a plain ``open(path, "w")`` would give (the replaced
    file's, or 0666 less the umask), not the private 0600 of a temporary file. A path that
    cannot be written raises ``OutputError`` naming it (so do OS errors while writing)."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(path, "is a folder; give a file name")
    if _not_regular(target):
        raise OutputError(path, "is a device, FIFO or socket, not a regular file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                   dir=target.parent)
    except OSError as exc:
        raise OutputError(path, f"cannot create files here ({exc.strerror or exc})",
                          exc.errno) from None
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            mode = target.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(path, f"cannot write: {exc.strerror or exc}", exc.errno) from exc
        raise


def write_atomic(path: str | os.PathLike[str], writer: Callable[[IO[str]], object]) -> None:
    """Write text through ``writer(fh)`` to ``path`` atomically (its return value, such as
    ``fh.write``'s count, is ignored)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        writer(fh)


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


ISO_UTC = "%Y-%m-%dT%H:%M:%S%.3fZ"  # polars strftime form of every time flockwatch writes


def iso_utc(t: dt.datetime) -> str:
    """``2026-03-02T08:00:00.480Z``: UTC, milliseconds (naive datetimes are taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def json_default(obj: Any) -> Any:
    """JSON encoder fallback: datetimes as ISO-8601 UTC, numpy scalars as numbers."""
    if isinstance(obj, dt.datetime):
        return iso_utc(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, **kwargs: Any) -> str:
    return json.dumps(obj, default=json_default, **kwargs)


def frame_records(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (datetimes become ISO-8601 UTC strings)."""
    out = df.with_columns(
        pl.col(c).dt.strftime(ISO_UTC)
        for c, t in df.schema.items() if isinstance(t, pl.Datetime)
    )
    return out.to_dicts()

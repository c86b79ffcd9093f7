"""Errors about inputs: each names the input and the problem in one line."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass


class InputError(ValueError):
    """An input (file, folder, interface, log) that cannot be used.

    ``str(err)`` is the one-line message shown to users: ``"<input>: <problem>"``.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


@dataclass(frozen=True)
class Problem:
    """An input that could not be read (``error``), was read in part (``warning``) or gave
    nothing to read (``notice``)."""

    source: str
    message: str
    #: "error": nothing could be read; "warning": read in part; "notice": nothing to read
    severity: str = "error"
    #: records (packets, log rows) of the input that were not read: whoever counts what went
    #: in can check that flows + skipped add up, and nothing is lost in silence
    skipped: int = 0

    def __str__(self) -> str:
        return f"{self.source}: {self.message}"


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def stat_input(path: str | os.PathLike[str], *, folders: bool = False) -> os.stat_result:
    """``os.stat`` of an input, or an ``InputError`` that says what is wrong with it.

    A FIFO or ``/dev/zero`` has size 0 but is no empty file (and reading a FIFO blocks), a
    symlink loop is no missing file, a file we may not read is not the end of a batch: each
    gets its own message. Folders pass only with ``folders=True``.
    """
    name = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(name, "broken symbolic link (its target does not exist)") from None
        raise InputError(name, "no such file or folder" if folders else "no such file") from None
    except PermissionError:
        raise InputError(name, "permission denied (a folder on its path cannot be searched)"
                         ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(name, "symbolic link loop (too many levels of links)") from None
        raise InputError(name, f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        if folders:
            return st
        raise InputError(name, "is a folder, expected a capture file")
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise InputError(name, f"is {kind}, expected a capture file or Zeek log")
    return st

"""Errors about inputs: each names the input and the problem in one line."""

from __future__ import annotations


class InputError(ValueError):
    """An input (file, folder, interface, log) that cannot be used.

    ``str(err)`` is the one-line message shown to users: ``"<input>: <problem>"``.
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem

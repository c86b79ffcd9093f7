"""Content hashes of captures: what a model learnt from, and what a report scores.

A capture is known by its bytes, not its name: the same file copied or renamed is the same
capture, and a capture rewritten in place is another one. Serving hashes what it scores to tell
a model's own learning captures apart (``serving.score.learnt_sources``); datasets key their
flow caches by it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, as hex."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

"""Hostile NVD CVE JSON 2.0 feeds for ``flockwatch vulns update``, and what each must satisfy.

Two kinds of input: a well-formed feed whose entries have values swapped for hostile ones,
removed, or of the wrong type anywhere inside (it must import, or fail with the one-line
``FeedError``); and the bytes of a feed cut short or with bytes changed (the same). Either
way the database the import started from stays as it was when it fails, and a successful
import can be matched against. Used by ``experiments/fuzz.py`` (target ``nvd_feed``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nvdfeed import config, cpe, entry, feed, match, metric  # noqa: E402

SSH = cpe("openbsd", "openssh")


@dataclass(frozen=True)
class FeedCase:
    data: bytes
    gz: bool = False
    note: str = ""


def _base() -> list[dict[str, Any]]:
    return [entry("CVE-2016-10009", [config([match(SSH, versionEndExcluding="7.4")]),
                                     config([match(cpe("a", "b"))],
                                            [match(cpe("a", "c"), False,
                                                   versionStartIncluding="1.0")],
                                            operator="AND")],
                  [metric("3.1", 7.8, "HIGH"), metric("4.0", 8.0), metric("2.0", 5.0, "MEDIUM")]),
            entry("CVE-2023-0001", [config([match(cpe("acme", "fw", "-", "o"))])],
                  status="Rejected")]


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=16),
                  st.sampled_from([SSH, "cpe:2.3:a:x", r"cpe:2.3:a:a\:b:c:*:*:*:*:*:*:*:*\\",
                                   "7.4", "CVE-1-1", "CVE-2024-99999", "Rejected", "AND", "",
                                   "*", "-", "Primary"]),
                  st.just([]), st.just({}))


def _mutate(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    if depth > 7 or draw(st.integers(0, 11)) == 0:
        return draw(_LEAF) if draw(st.booleans()) else value
    if isinstance(value, dict):
        out = {k: _mutate(draw, v, depth + 1) for k, v in value.items()}
        if out and draw(st.integers(0, 6)) == 0:
            out.pop(draw(st.sampled_from(sorted(out))))
        return out
    if isinstance(value, list):
        return [_mutate(draw, v, depth + 1) for v in value]
    return value


@st.composite
def feed_cases(draw: st.DrawFn) -> FeedCase:
    entries = [_mutate(draw, e) for e in _base() * draw(st.integers(1, 2))]
    doc: Any = feed(entries)
    if draw(st.integers(0, 9)) == 0:
        doc = _mutate(draw, doc)
    data = json.dumps(doc, allow_nan=True).encode()
    how = draw(st.integers(0, 5))
    if how == 0:  # cut short
        data = data[:draw(st.integers(0, len(data)))]
        return FeedCase(data, note="cut")
    if how == 1:  # bytes changed
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return FeedCase(bytes(b), note="bytes")
    if how == 2:
        import gzip

        z = gzip.compress(data)
        return FeedCase(z[:draw(st.integers(len(z) // 2, len(z)))], gz=True, note="gzip")
    return FeedCase(data, note="values")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_feed(case: FeedCase, folder: Path) -> None:
    """Import or one-line ``FeedError``; the database intact on failure."""
    import polars as pl

    from flockwatch.serving.vulns import FeedError, match, update

    base = folder / "base.sqlite"
    if not base.exists():
        good = folder / "good.json"
        good.write_text(json.dumps(feed(_base())))
        update([good], db=base)
    db = folder / "work.sqlite"
    shutil.copyfile(base, db)
    before = _digest(db)
    path = folder / ("f.json.gz" if case.gz else "f.json")
    path.write_bytes(case.data)
    try:
        update([path], db=db)
    except FeedError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text, text
        assert _digest(db) == before, "a failed import changed the database"
        return
    sw = pl.DataFrame({"device_id": ["d", "d"], "vendor": ["openbsd", "a"],
                       "product": ["openssh", "b"], "version": ["7.2", "2"],
                       "cpe": [None, None]}, schema_overrides={"cpe": pl.String})
    match(sw, db)


FEED_CORPUS = {
    "empty": lambda: FeedCase(b""),
    "null": lambda: FeedCase(b"null"),
    "deep": lambda: FeedCase(b'{"vulnerabilities": [' + b"[" * 100_000 + b"]"),
    "nan_score": lambda: FeedCase(json.dumps(feed([entry(
        "CVE-2024-0001", [], [metric("3.1", float("nan"))])])).encode()),
    "huge_number": lambda: FeedCase(b'{"vulnerabilities": [], "totalResults": 1' + b"0" * 5000
                                    + b"}"),
    "lone_surrogate": lambda: FeedCase(b'{"vulnerabilities": [{"cve": {"id": "\\ud800"}}]}'),
    "utf16": lambda: FeedCase(json.dumps(feed([])).encode("utf-16")),
}

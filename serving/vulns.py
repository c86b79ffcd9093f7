"""Known vulnerabilities, offline: a local SQLite CVE database built from the NVD CVE JSON 2.0
feed files and the CISA KEV catalogue that the user downloaded, and the matching of each
device's software (``features.software.device_software``) against it (``docs``: vulns).

Nothing here reaches the network: sensors sit on plant networks that often have no way out,
and a scan must give the same answer tomorrow for the same database.

Why a matcher of our own: ``nvdlib`` queries the online NVD API; ``cpe`` parses and compares
CPE names but knows no version ranges; ``univers`` is built around package URLs, with one
version scheme per package ecosystem, which an NVD criteria does not name; firmware strings
such as ``1.0.2k``, ``7.4p1`` or ``V2.4.1-rc1`` need one tolerant order.
What the NVD data needs is small: split a CPE 2.3 name, compare two versions tolerantly, and
test a version against a range; each is here, with its rules documented and tested.

Memory: a yearly feed is 100-300 MB of JSON. ``json.load`` would hold all of it as Python
objects (several times its size); the reader below decodes one ``vulnerabilities`` entry at a
time with the standard decoder, so an import holds one entry and one read buffer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import gzip
import io
import json
import os
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from flockwatch.features.errors import InputError
from flockwatch.features.home import flockwatch_home
from flockwatch.serving.contract import CvssSeverity, Vulnerability

if TYPE_CHECKING:
    import polars as pl

#: the database's own layout; a database of another layout is refused, not misread
DB_VERSION = 1
DB_NAME = "vulns.sqlite"
#: descriptions are cut here: a reminder of what the CVE is, the NVD page has the rest
DESCRIPTION_CHARS = 200
#: CVSS versions in the order of preference of the score reported
CVSS_PREFERENCE = (("cvssMetricV31", "3.1"), ("cvssMetricV40", "4.0"),
                   ("cvssMetricV30", "3.0"), ("cvssMetricV2", "2.0"))
_CVE_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,}")


def default_db() -> Path:
    """``FLOCKWATCH_HOME/vulns.sqlite``."""
    return flockwatch_home() / DB_NAME


class FeedError(InputError):
    """A feed that cannot be imported: ``FILE: entry N (CVE-...): problem``."""


# --- versions -------------------------------------------------------------------------------

_TOKEN = re.compile(r"[0-9]+|[a-z]+")
#: words that mark a pre-release wherever they stand: 2.4.1-rc1 comes before 2.4.1
_PRE_WORDS = {"dev": 0, "snapshot": 0, "alpha": 1, "beta": 2, "pre": 3, "preview": 3, "rc": 3}
#: letters that mark a pre-release only when a number follows: 1.0a1 is an alpha, but 1.0.2a
#: is OpenSSL's first patch letter after 1.0.2
_PRE_LETTERS = {"a": 1, "b": 2, "c": 3}

VersionKey = tuple[tuple[int, int, str], ...]


@functools.lru_cache(maxsize=1 << 16)
def version_key(text: str | None) -> VersionKey | None:
    """A sort key for a version string, or None when it has no digit (``*``, ``-``, ``n/a``).

    The string is cut into runs of digits and runs of letters (``1.0.2k`` -> 1 0 2 k;
    ``7.4p1`` -> 7 4 p 1; separators ``.-_+~:`` and spaces only separate). Numbers compare as
    numbers, trailing zeros of a run of numbers do not count (``1.0`` = ``1.0.0``). A word
    after which the version stops or goes on is, at the same position: a pre-release word
    (``dev``, ``alpha``, ``beta``, ``pre``, ``rc``; ``a``/``b``/``c`` followed by a number)
    < the end of the version < any other word (a patch letter: ``k``, ``p``, ``build``) < a
    number. So ``2.4.1-rc1`` < ``2.4.1`` < ``2.4.1a`` < ``2.4.1.1``. A leading ``v`` before
    a digit is dropped (``v1.2`` = ``1.2``).
    """
    if text is None:
        return None
    s = text.strip().lower()
    if s.startswith("v") and s[1:2].isdigit():
        s = s[1:]
    tokens = _TOKEN.findall(s)
    if not any(t[0].isdigit() for t in tokens):
        return None
    key: list[tuple[int, int, str]] = []
    run: list[tuple[int, int, str]] = []  # the current run of numbers

    def close_run() -> None:
        while len(run) > 1 and run[-1][1] == 0:  # 1.0.0 -> 1
            run.pop()
        key.extend(run)
        run.clear()

    for i, t in enumerate(tokens):
        if t[0].isdigit():
            digits = t.lstrip("0")
            run.append((3, len(digits), digits))
            continue
        close_run()
        numbered = i + 1 < len(tokens) and tokens[i + 1][0].isdigit()
        if t in _PRE_WORDS:
            key.append((0, _PRE_WORDS[t], t))
        elif t in _PRE_LETTERS and numbered:
            key.append((0, _PRE_LETTERS[t], t))
        else:
            key.append((2, 0, t))
    close_run()
    return tuple(key)


_END = (1, 0, "")


def compare_versions(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as ``a`` is before, the same as or after ``b`` (``version_key``'s rules);
    None when either has no digit to compare."""
    ka, kb = version_key(a), version_key(b)
    if ka is None or kb is None:
        return None
    n = max(len(ka), len(kb))
    pa = ka + (_END,) * (n - len(ka))
    pb = kb + (_END,) * (n - len(kb))
    return (pa > pb) - (pa < pb)


# --- CPE names ------------------------------------------------------------------------------

#: fields of a CPE 2.3 formatted string: cpe:2.3:part:vendor:product:version:update:...
CPE_FIELDS = 13
ANY = "*"
NA = "-"


def split_cpe(name: str) -> list[str] | None:
    """The 13 fields of a CPE 2.3 formatted string, unescaped (``\\:`` -> ``:``), vendor and
    product in lower case; None for anything else."""
    if not isinstance(name, str) or not name.startswith("cpe:2.3:"):
        return None
    fields: list[str] = []
    cur: list[str] = []
    escaped = False
    for ch in name:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if escaped:
        return None
    fields.append("".join(cur))
    if len(fields) != CPE_FIELDS or fields[2] not in ("a", "o", "h", ANY):
        return None
    if not fields[3] or not fields[4] or fields[3] in (ANY, NA) or fields[4] in (ANY, NA):
        return None
    fields[3], fields[4] = fields[3].lower(), fields[4].lower()
    return fields


def cpe_name_part(text: str) -> str:
    """A vendor or product as CPE spells it: lower case, blanks to underscores."""
    return re.sub(r"\s+", "_", text.strip().lower())


@dataclass(frozen=True)
class Range:
    """What a ``cpeMatch`` says of versions: an exact version (``version``, with ``update``)
    or ``*``/``-`` with optional bounds."""

    version: str
    update: str
    start_incl: str | None = None
    start_excl: str | None = None
    end_incl: str | None = None
    end_excl: str | None = None

    @property
    def bounded(self) -> bool:
        return any((self.start_incl, self.start_excl, self.end_incl, self.end_excl))

    def text(self) -> str:
        """``>= 7.0, < 7.4`` (empty for no bounds)."""
        parts = [f"{op} {v}" for op, v in ((">=", self.start_incl), (">", self.start_excl),
                                           ("<=", self.end_incl), ("<", self.end_excl)) if v]
        return ", ".join(parts)

    def contains(self, version: str | None, update: str | None = None) -> bool:
        """Whether a device's version is in range.

        ``*`` or ``-`` without bounds take every version, even an unknown one (NVD writes
        ``-`` for firmware whose versions it does not list: all are affected). An exact
        version must compare equal, its update field joined on (``7.4`` + ``p1`` = ``7.4p1``).
        A bound that cannot be compared, or an unknown device version against a range or an
        exact version, is no match: unknown is not affected, by choice (no CVE list padded
        with guesses)."""
        seen = _joined(version, update)
        if self.version not in (ANY, NA, ""):
            want = _joined(self.version, self.update)
            if seen is None or want is None:
                return False
            cmp = compare_versions(seen, want)
            return cmp == 0 if cmp is not None else seen.lower() == want.lower()
        if not self.bounded:
            return True
        if seen is None:
            return False
        checks = ((self.start_incl, (0, 1)), (self.start_excl, (1,)),
                  (self.end_incl, (-1, 0)), (self.end_excl, (-1,)))
        for bound, allowed in checks:
            if bound:
                cmp = compare_versions(seen, bound)
                if cmp is None or cmp not in allowed:
                    return False
        return True


def _joined(version: str | None, update: str | None) -> str | None:
    if version is None or version.strip() in ("", ANY, NA):
        return None
    if update and update not in (ANY, NA):
        return version + update
    return version


# --- reading feeds --------------------------------------------------------------------------

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _Syntax(Exception):
    pass


#: what ``_JsonStream.members`` gives once the streamed array has ended
ARRAY_DONE = object()


class _JsonStream:
    """A top-level JSON object read value by value, one value at a time in memory: the
    standard decoder over a buffer that grows only while a value does not fit."""

    CHUNK = 1 << 20

    def __init__(self, fh: IO[str]) -> None:
        self.fh, self.buf, self.pos, self.eof = fh, "", 0, False
        self.in_array = False  # inside the streamed array: a syntax error is an entry's

    def _more(self) -> bool:
        if self.eof:
            return False
        # read at least as much as is buffered: a value longer than a chunk costs
        # O(its length) decoding attempts in all, not O(length^2 / chunk)
        data = self.fh.read(max(self.CHUNK, len(self.buf) - self.pos))
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def peek(self) -> str:
        while True:
            m = _WS.match(self.buf, self.pos)
            self.pos = m.end() if m else self.pos
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos:self.pos + 1]

    def expect(self, ch: str) -> None:
        got = self.peek()
        if got != ch:
            what = "a JSON object ('{')" if ch == "{" and self.pos == 0 else repr(ch)
            raise _Syntax(f"expected {what} but found {got!r}" if got
                          else f"expected {what} but the file ends")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._more():
                    continue
                raise _Syntax(exc.msg) from None
            except RecursionError:
                raise _Syntax("nested too deeply") from None
            except ValueError as exc:  # an integer of more digits than Python converts
                raise _Syntax(str(exc).split(";")[0]) from None
            if end == len(self.buf) and self._more():  # a number may go on past the buffer
                continue
            self.pos = end
            return obj

    def members(self, array_key: str) -> Iterator[tuple[str, Any, bool]]:
        """``(key, value, False)`` for each member of the top-level object, except that the
        items of the array under ``array_key`` come one by one as ``(key, item, True)``,
        followed by ``(key, ARRAY_DONE, False)``."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
        else:
            while True:
                key = self.value()
                if not isinstance(key, str):
                    raise _Syntax("expected a member name")
                self.expect(":")
                if key == array_key and self.peek() == "[":
                    self.pos += 1
                    self.in_array = True
                    if self.peek() == "]":
                        self.pos += 1
                    else:
                        while True:
                            yield key, self.value(), True
                            if self.peek() == ",":
                                self.pos += 1
                                continue
                            self.expect("]")
                            break
                    self.in_array = False
                    yield key, ARRAY_DONE, False
                else:
                    yield key, self.value(), False
                if self.peek() == ",":
                    self.pos += 1
                    continue
                self.expect("}")
                break
        if self.peek():
            raise _Syntax("extra data after the top-level object")


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[tuple[IO[str], IO[bytes]]]:
    """The file as text (``.gz`` decompressed), and the raw file, whose position tells the
    progress."""
    raw = path.open("rb")
    try:
        head = raw.read(2)
        raw.seek(0)
        binary = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if head == b"\x1f\x8b" else raw
        yield io.TextIOWrapper(binary, encoding="utf-8", errors="strict"), raw
    finally:
        raw.close()


def _problem_of(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, (gzip.BadGzipFile, EOFError, zlib.error)):
        return f"not a readable gzip file ({exc or type(exc).__name__})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


@dataclass
class _Cve:
    cve: str
    cvss: float | None
    cvss_version: str | None
    severity: str | None
    published: str | None
    modified: str | None
    description: str | None
    rejected: bool
    matches: list[tuple[Any, ...]]  # cpe_match rows less the cve


class _Bad(Exception):
    """An entry's problem, where in the entry."""


def _obj(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Bad(f"{where}: expected an object, found {_kind(v)}")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise _Bad(f"{where}: expected a list, found {_kind(v)}")
    return v


def _str(v: Any, where: str, optional: bool = True) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise _Bad(f"{where}: expected a string, found {_kind(v)}")
    if not _encodable(v):
        raise _Bad(f"{where}: not valid Unicode (a lone surrogate escape)")
    return v


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(v: Any) -> str:
    """A short quote of a bad value for a one-line message."""
    return json.dumps(v)[:40] if isinstance(v, str) else _kind(v)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            type(None): "null"}.get(type(v), "a number")


def severity_of(score: float) -> str:
    """The CVSS v3 qualitative rating of a score (used where a metric gives none)."""
    if score == 0:
        return "none"
    return "low" if score < 4 else "medium" if score < 7 else "high" if score < 9 else "critical"


def _cvss(metrics: Any) -> tuple[float | None, str | None, str | None]:
    metrics = _obj(metrics, "metrics") if metrics is not None else {}
    for key, version in CVSS_PREFERENCE:
        items = _list(metrics.get(key), f"metrics.{key}")
        if not items:
            continue
        for i, m in enumerate(items):
            _obj(m, f"metrics.{key}[{i}]")
        chosen = next((m for m in items if m.get("type") == "Primary"), items[0])
        where = f"metrics.{key}[{items.index(chosen)}].cvssData"
        data = _obj(chosen.get("cvssData"), where)
        score = data.get("baseScore")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not (
                0 <= score <= 10):
            raise _Bad(f"{where}.baseScore: expected a number from 0 to 10, found "
                       f"{_kind(score) if not isinstance(score, (int, float)) else score}")
        sev = data.get("baseSeverity", chosen.get("baseSeverity"))
        sev = _str(sev, f"{where}.baseSeverity")
        sev = sev.lower() if sev else None
        if sev not in {s.value for s in CvssSeverity}:
            sev = severity_of(float(score))
        return float(score), version, sev
    return None, None, None


def _parse_entry(item: Any) -> _Cve:
    """One ``vulnerabilities[]`` entry, checked; ``_Bad`` names what is wrong."""
    entry = _obj(item, "entry")
    cve = _obj(entry.get("cve"), "cve")
    cid = cve.get("id")
    if not isinstance(cid, str) or not _CVE_ID.fullmatch(cid):
        raise _Bad(f"cve.id: expected CVE-YYYY-NNNN, found {_shown(cid)}")
    status = _str(cve.get("vulnStatus"), "cve.vulnStatus")
    desc = None
    for i, d in enumerate(_list(cve.get("descriptions"), "cve.descriptions")):
        d = _obj(d, f"cve.descriptions[{i}]")
        value = _str(d.get("value"), f"cve.descriptions[{i}].value")
        if value is not None and (desc is None or d.get("lang") == "en"):
            desc = " ".join(value.split())[:DESCRIPTION_CHARS]
            if d.get("lang") == "en":
                break
    score, version, sev = _cvss(cve.get("metrics"))
    matches: list[tuple[Any, ...]] = []
    for ci, conf in enumerate(_list(cve.get("configurations"), "cve.configurations")):
        where = f"configurations[{ci}]"
        conf = _obj(conf, where)
        op = _str(conf.get("operator"), f"{where}.operator")
        both = op == "AND"
        for ni, node in enumerate(_list(conf.get("nodes"), f"{where}.nodes")):
            nwhere = f"{where}.nodes[{ni}]"
            node = _obj(node, nwhere)
            negate = node.get("negate") is True
            for mi, m in enumerate(_list(node.get("cpeMatch"), f"{nwhere}.cpeMatch")):
                mwhere = f"{nwhere}.cpeMatch[{mi}]"
                m = _obj(m, mwhere)
                vulnerable = m.get("vulnerable")
                if not isinstance(vulnerable, bool):
                    raise _Bad(f"{mwhere}.vulnerable: expected true/false, found "
                               f"{_kind(vulnerable)}")
                criteria = _str(m.get("criteria"), f"{mwhere}.criteria", optional=False)
                assert criteria is not None
                fields = split_cpe(criteria)
                if fields is None:
                    raise _Bad(f"{mwhere}.criteria: not a CPE 2.3 name: "
                               f"{json.dumps(criteria)[:80]}")
                bounds = [_str(m.get(k), f"{mwhere}.{k}") for k in (
                    "versionStartIncluding", "versionStartExcluding", "versionEndIncluding",
                    "versionEndExcluding")]
                if not vulnerable and not both:
                    continue  # a platform matters only to an AND configuration
                matches.append((ci, ni, int(vulnerable), int(negate), int(both), fields[3],
                                fields[4], criteria, fields[5], fields[6], *bounds))
    published = _str(cve.get("published"), "cve.published")
    modified = _str(cve.get("lastModified"), "cve.lastModified")
    return _Cve(cid, score, version, sev, published, modified, desc,
                status == "Rejected", matches)


# --- the database ---------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE feeds (file TEXT NOT NULL, kind TEXT NOT NULL, timestamp TEXT,
                    imported TEXT NOT NULL, entries INTEGER NOT NULL);
CREATE TABLE cves (cve TEXT PRIMARY KEY, cvss REAL, cvss_version TEXT, severity TEXT,
                   published TEXT, modified TEXT, description TEXT) WITHOUT ROWID;
CREATE TABLE cpe_match (cve TEXT NOT NULL, config INTEGER NOT NULL, node INTEGER NOT NULL,
                        vulnerable INTEGER NOT NULL, negate INTEGER NOT NULL,
                        config_and INTEGER NOT NULL, vendor TEXT NOT NULL,
                        product TEXT NOT NULL, criteria TEXT NOT NULL, version TEXT NOT NULL,
                        update_ TEXT NOT NULL, start_incl TEXT, start_excl TEXT,
                        end_incl TEXT, end_excl TEXT);
CREATE INDEX cpe_match_product ON cpe_match (vendor, product);
CREATE INDEX cpe_match_cve ON cpe_match (cve);
CREATE TABLE kev (cve TEXT PRIMARY KEY, date_added TEXT, name TEXT) WITHOUT ROWID;
CREATE TABLE rejected (cve TEXT PRIMARY KEY, modified TEXT) WITHOUT ROWID;
"""


class DatabaseError(InputError):
    """A CVE database that cannot be read: missing, not SQLite, another layout."""


def connect(db: str | os.PathLike[str]) -> sqlite3.Connection:
    """The database, read-only, checked to be of this layout."""
    path = Path(db)
    if not path.is_file():
        raise DatabaseError(str(path), "no CVE database here; import feeds with "
                            "'flockwatch vulns update --nvd-feed FILE'")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'db_version'").fetchone()
    except sqlite3.DatabaseError as exc:
        con.close()
        raise DatabaseError(str(path), f"not a flockwatch CVE database ({exc})") from None
    if row is None or row[0] != str(DB_VERSION):
        con.close()
        raise DatabaseError(str(path), f"CVE database layout {row[0] if row else '?'}, this "
                            f"flockwatch reads {DB_VERSION}: import the feeds again with "
                            "'flockwatch vulns update --fresh'")
    return con


@dataclass
class UpdateSummary:
    """What an update imported."""

    db: str
    feeds: int
    entries: int
    cves: int
    rejected: int
    cpe_rows: int
    kev: int | None
    total_cves: int
    total_kev: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


#: (file, bytes read, file size): called as an import goes, for a progress bar
Progress = Callable[[str, int, int], None]


def update(feeds: Sequence[str | os.PathLike[str]], kev: str | os.PathLike[str] | None = None,
           db: str | os.PathLike[str] | None = None, *, fresh: bool = False,
           progress: Progress | None = None) -> UpdateSummary:
    """Import NVD CVE JSON 2.0 feed files (``nvdcve-2.0-*.json[.gz]``) and the CISA KEV
    catalogue into the database, atomically.

    The import writes a new file beside the database (a copy of the old one unless
    ``fresh``) and renames it over the old only when every feed was read: a bad feed raises
    ``FeedError`` (``FILE: entry N (CVE-...): problem``) and leaves the database as it was.
    A CVE seen twice keeps its latest ``lastModified`` version, whatever the order of the
    feeds (a yearly feed after the ``modified`` one does not undo it); a rejected CVE is
    removed. A KEV file replaces the KEV list (it is the whole catalogue each time).

    >>> update(["nvdcve-2.0-2024.json.gz"], kev="known_exploited_vulnerabilities.json")
    ... # doctest: +SKIP
    """
    from flockwatch.features.output import atomic_path

    target = Path(db) if db is not None else default_db()
    for f in [*feeds, *([kev] if kev is not None else [])]:
        _check_file(Path(f))
    old = None if fresh or not target.exists() else connect(target)
    summary = UpdateSummary(str(target), len(feeds), 0, 0, 0, 0, None, 0, 0)
    try:
        with atomic_path(target) as tmp:
            _build(Path(tmp), old, feeds, kev, summary, progress)
    finally:
        if old is not None:
            old.close()
    return summary


def _build(tmp: Path, old: sqlite3.Connection | None, feeds: Sequence[str | os.PathLike[str]],
           kev: str | os.PathLike[str] | None, summary: UpdateSummary,
           progress: Progress | None) -> None:
    """Write the new database into ``tmp``: the old one's copy (or an empty one), then the
    feeds and the KEV catalogue."""
    con = sqlite3.connect(tmp)
    try:
        # a private file until it is renamed: no journal, no sync per commit; one fsync at
        # the end, so that the rename never publishes a file still in the page cache only
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        if old is not None:
            old.backup(con)
        else:
            con.executescript(_SCHEMA)
            con.execute("INSERT INTO meta VALUES ('db_version', ?)", (str(DB_VERSION),))
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for feed in feeds:
            _import_feed(con, Path(feed), now, summary, progress)
        if kev is not None:
            summary.kev = _import_kev(con, Path(kev), now)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('updated', ?)", (now,))
        con.commit()
        summary.total_cves = con.execute("SELECT count(*) FROM cves").fetchone()[0]
        summary.total_kev = con.execute("SELECT count(*) FROM kev").fetchone()[0]
    finally:
        con.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_BATCH = 2000


def _check_file(path: Path) -> None:
    """A feed that is no regular file fails before any work (a FIFO would block the read)."""
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        raise FeedError(str(path), "no such file") from None
    except OSError as exc:
        raise FeedError(str(path), f"cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FeedError(str(path), "is a folder, expected a feed file")
    if not stat.S_ISREG(st.st_mode):
        raise FeedError(str(path), "not a regular file, expected a feed file")


def _import_feed(con: sqlite3.Connection, path: Path, now: str, summary: UpdateSummary,
                 progress: Progress | None) -> None:
    name = str(path)
    size = path.stat().st_size if path.is_file() else 0
    n = 0
    cid = None
    timestamp = None
    seen_array = False
    pending: list[_Cve] = []
    try:
        with _open_text(path) as (text, raw):
            stream = _JsonStream(text)
            try:
                for key, value, item in stream.members("vulnerabilities"):
                    if item:
                        n += 1
                        cid = value.get("cve", {}).get("id") if isinstance(value, dict) and \
                            isinstance(value.get("cve"), dict) else None
                        try:
                            pending.append(_parse_entry(value))
                        except _Bad as exc:
                            raise FeedError(name, f"{_entry(n, cid)}: {exc}") from None
                        if len(pending) >= _BATCH:
                            _store(con, pending, summary)
                            pending.clear()
                            if progress:
                                progress(name, raw.tell(), size)
                    elif key == "vulnerabilities":
                        if value is not ARRAY_DONE:
                            raise FeedError(name, "'vulnerabilities' is not a list")
                        seen_array = True
                    elif key == "timestamp" and isinstance(value, str) and _encodable(value):
                        timestamp = value
                    elif key == "CVE_Items":
                        raise FeedError(name, "an NVD 1.1 feed (CVE_Items): NVD retired "
                                        "those; download the CVE JSON 2.0 feeds")
                    elif key == "catalogVersion":
                        raise FeedError(name, "the CISA KEV catalogue: give it with --kev")
                    elif key == "format" and value != "NVD_CVE":
                        raise FeedError(name, f"format {_shown(value)}, expected "
                                        "\"NVD_CVE\" (an NVD CVE JSON 2.0 feed)")
            except _Syntax as exc:
                where = f"{_entry(n + 1, None)}: " if stream.in_array else ""
                raise FeedError(name, f"{where}not valid JSON: {exc}") from None
    except FeedError:
        raise
    except (OSError, UnicodeDecodeError, EOFError, zlib.error) as exc:
        at = f" (after {_entry(n, cid)})" if n else ""
        raise FeedError(name, f"{_problem_of(exc)}{at}") from None
    if not seen_array:
        raise FeedError(name, "not an NVD CVE JSON 2.0 feed: no 'vulnerabilities' list")
    _store(con, pending, summary)
    summary.entries += n
    con.execute("INSERT INTO feeds VALUES (?, 'nvd', ?, ?, ?)", (_name(path), timestamp, now, n))
    if progress:
        progress(name, size, size)


def _name(path: Path) -> str:
    """A file's name as the database can hold it (an undecodable byte escaped)."""
    return path.name if _encodable(path.name) else ascii(path.name)


def _entry(n: int, cid: Any) -> str:
    return f"entry {n} ({cid})" if isinstance(cid, str) and _CVE_ID.fullmatch(cid) \
        else f"entry {n}"


def _store(con: sqlite3.Connection, cves: Iterable[_Cve], summary: UpdateSummary) -> None:
    for c in cves:
        row = con.execute("SELECT modified FROM cves WHERE cve = ? UNION ALL "
                          "SELECT modified FROM rejected WHERE cve = ?", (c.cve, c.cve)
                          ).fetchone()
        if row is not None and row[0] and c.modified and c.modified < row[0]:
            continue  # an older copy of a CVE already imported (or rejected since)
        con.execute("DELETE FROM cpe_match WHERE cve = ?", (c.cve,))
        if c.rejected:
            con.execute("DELETE FROM cves WHERE cve = ?", (c.cve,))
            con.execute("INSERT OR REPLACE INTO rejected VALUES (?, ?)", (c.cve, c.modified))
            summary.rejected += 1
            continue
        con.execute("DELETE FROM rejected WHERE cve = ?", (c.cve,))
        con.execute("INSERT OR REPLACE INTO cves VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (c.cve, c.cvss, c.cvss_version, c.severity, c.published, c.modified,
                     c.description))
        con.executemany("INSERT INTO cpe_match VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                        "?, ?, ?)", [(c.cve, *m) for m in c.matches])
        summary.cves += 1
        summary.cpe_rows += len(c.matches)


def _import_kev(con: sqlite3.Connection, path: Path, now: str) -> int:
    """The CISA KEV catalogue (``known_exploited_vulnerabilities.json``): small, read whole."""
    name = str(path)
    try:
        with _open_text(path) as (text, _raw):
            doc = json.load(text)
    except json.JSONDecodeError as exc:
        raise FeedError(name, f"not valid JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:
        raise FeedError(name, "not valid JSON: nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise FeedError(name, _problem_of(exc)) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise FeedError(name, f"not valid JSON: {str(exc).split(';')[0]}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise FeedError(name, _problem_of(exc)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("vulnerabilities"), list):
        raise FeedError(name, "not the CISA KEV catalogue: no 'vulnerabilities' list")
    rows = []
    for n, item in enumerate(doc["vulnerabilities"], 1):
        cid = item.get("cveID") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not _CVE_ID.fullmatch(cid):
            raise FeedError(name, f"entry {n}: cveID: expected CVE-YYYY-NNNN, found "
                            f"{_shown(cid)}")
        added, title = item.get("dateAdded"), item.get("vulnerabilityName")
        rows.append((cid, added if isinstance(added, str) and _encodable(added) else None,
                     title[:DESCRIPTION_CHARS] if isinstance(title, str) and _encodable(title)
                     else None))
    con.execute("DELETE FROM kev")
    con.executemany("INSERT OR REPLACE INTO kev VALUES (?, ?, ?)", rows)
    con.execute("DELETE FROM feeds WHERE kind = 'kev'")
    released = doc.get("dateReleased")
    con.execute("INSERT INTO feeds VALUES (?, 'kev', ?, ?, ?)",
                (_name(path), released if isinstance(released, str) and _encodable(released)
                 else None, now, len(rows)))
    return len(rows)


def describe_db(db: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Counts and feeds of the database, for ``flockwatch vulns list``."""
    path = Path(db) if db is not None else default_db()
    con = connect(path)
    try:
        def one(query: str) -> Any:
            return con.execute(query).fetchone()[0]

        feeds = [dict(zip(("file", "kind", "timestamp", "imported", "entries"), r, strict=True))
                 for r in con.execute("SELECT file, kind, timestamp, imported, entries "
                                      "FROM feeds ORDER BY kind DESC, file")]
        return {"db": str(path), "updated": one("SELECT value FROM meta WHERE key = 'updated'"),
                "cves": one("SELECT count(*) FROM cves"),
                "cves_with_cpe": one("SELECT count(DISTINCT cve) FROM cpe_match"),
                "cpe_rows": one("SELECT count(*) FROM cpe_match"),
                "products": one("SELECT count(*) FROM (SELECT DISTINCT vendor, product "
                                "FROM cpe_match WHERE vulnerable = 1)"),
                "kev": one("SELECT count(*) FROM kev"),
                "feeds": feeds}
    finally:
        con.close()


# --- matching -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Soft:
    """One software row as matching needs it."""

    device_id: str
    vendor: str
    product: str
    version: str | None
    update: str | None
    shown: str  # "vendor product version" as seen


def _software_rows(software: pl.DataFrame) -> list[_Soft]:
    """The rows that name a product: by their ``cpe`` when it parses, else by ``vendor`` and
    ``product`` spelt as CPE spells them."""
    cols = set(software.columns)
    out = []
    for r in software.iter_rows(named=True):
        dev = r.get("device_id")
        if dev is None:
            continue
        vendor, product = r.get("vendor"), r.get("product")
        version = r.get("version") if "version" in cols else None
        update = None
        fields = split_cpe(r["cpe"]) if "cpe" in cols and r.get("cpe") else None
        if fields is not None:
            v, p = fields[3], fields[4]
            if fields[5] not in (ANY, NA, ""):
                version = fields[5]
            update = fields[6] if fields[6] not in (ANY, NA, "") else None
        elif vendor and product and cpe_name_part(str(vendor)) and cpe_name_part(str(product)):
            v, p = cpe_name_part(str(vendor)), cpe_name_part(str(product))
        else:
            continue
        seen = " ".join(str(x) for x in (vendor or v, product or p,
                                          _joined(version, update)) if x)
        out.append(_Soft(str(dev), v, p, str(version) if version is not None else None,
                         update, seen))
    return out


MATCH_COLUMNS = ("device_id", "cve", "cvss", "cvss_version", "severity", "kev", "matched_on",
                 "product", "description")


#: Devices' matches kept between calls (``match``): (database file, device, software set).
_MATCHED: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
_MATCHED_MAX = 20_000


def match(software: pl.DataFrame, db: str | os.PathLike[str] | None = None) -> pl.DataFrame:
    """The CVEs that apply to each device's software: one row per (device, CVE) with
    ``MATCH_COLUMNS``, the highest CVSS first.

    ``software`` has ``device_software``'s columns (``device_id``, ``vendor``, ``product``,
    ``version``, ``cpe``; the others are not needed). A ``cpeMatch`` applies when its vendor
    and product are the row's and the row's version is in its range (``Range.contains``).
    In an AND configuration (an application on a platform), a platform node is checked only
    when the device shows a product of that node: it must then be in the node's range, else
    the CVE does not apply; a platform the device does not show is assumed present (devices
    announce their firmware far more often than their hardware model).
    """
    import polars as pl

    rows = _software_rows(software)
    schema = {"device_id": pl.String, "cve": pl.String, "cvss": pl.Float64,
              "cvss_version": pl.String, "severity": pl.String, "kev": pl.Boolean,
              "matched_on": pl.String, "product": pl.String, "description": pl.String}
    if not rows:
        return pl.DataFrame(schema=schema)
    path = Path(db if db is not None else default_db())
    try:
        st = path.stat()
        db_key = (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        db_key = None  # connect() names the problem
    # A device's matches depend on its whole software set (AND configurations): cached per
    # device and set, for as long as the database file is unchanged. The live sensor matches
    # every window, and a device shows the same software window after window.
    per: dict[str, list[_Soft]] = {}
    for r in rows:
        per.setdefault(r.device_id, []).append(r)
    found: list[tuple[Any, ...]] = []
    todo: list[_Soft] = []
    keys = {d: (db_key, d, tuple(sorted(set(rs), key=repr))) for d, rs in per.items()}
    for d, rs in per.items():
        hit = _MATCHED.get(keys[d]) if db_key is not None else None
        if hit is None:
            todo += rs
        else:
            found += hit
    if todo:
        con = connect(path)
        try:
            fresh = _match_rows(con, todo)
        finally:
            con.close()
        found += fresh
        if db_key is not None:
            by: dict[str, list[tuple[Any, ...]]] = {r.device_id: [] for r in todo}
            for f in fresh:
                by[f[0]].append(f)
            if len(_MATCHED) + len(by) > _MATCHED_MAX:
                _MATCHED.clear()
            _MATCHED.update({keys[d]: v for d, v in by.items()})
    df = pl.DataFrame(found, schema=schema, orient="row")
    return (df.sort(["device_id", "cvss", "cve", "product", "matched_on"],
                    descending=[False, True, False, False, False], nulls_last=True)
            .unique(["device_id", "cve"], keep="first", maintain_order=True))


def _match_rows(con: sqlite3.Connection, rows: list[_Soft]) -> list[tuple[Any, ...]]:
    candidates: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for pair in {(r.vendor, r.product) for r in rows}:
        candidates[pair] = con.execute(
            "SELECT m.cve, m.config, m.config_and, m.criteria, m.version, m.update_, "
            "m.start_incl, m.start_excl, m.end_incl, m.end_excl, c.cvss, c.cvss_version, "
            "c.severity, c.description, k.cve IS NOT NULL "
            "FROM cpe_match m JOIN cves c ON c.cve = m.cve LEFT JOIN kev k ON k.cve = m.cve "
            "WHERE m.vendor = ? AND m.product = ? AND m.vulnerable = 1", pair).fetchall()
    by_device: dict[str, list[_Soft]] = {}
    for r in rows:
        by_device.setdefault(r.device_id, []).append(r)
    platforms: dict[tuple[str, int], bool] = {}
    out = []
    for r in rows:
        for (cve, config, config_and, criteria, version, update, *bounds, cvss, cvss_version,
             severity, description, kev) in candidates[(r.vendor, r.product)]:
            rng = Range(version, update, *bounds)
            if not rng.contains(r.version, r.update):
                continue
            if config_and and not _platform_ok(con, cve, config, by_device[r.device_id],
                                               platforms):
                continue
            matched_on = f"{criteria} {rng.text()}".strip()
            out.append((r.device_id, cve, cvss, cvss_version, severity, bool(kev), matched_on,
                        r.shown, description))
    return out


def _platform_ok(con: sqlite3.Connection, cve: str, config: int, device: list[_Soft],
                 cache: dict[tuple[str, int], bool]) -> bool:
    """Whether no platform node of an AND configuration is contradicted by what the device
    shows (cached per device and configuration by the caller's dict, keyed with the device)."""
    key = (f"{device[0].device_id}\0{cve}", config)
    if key in cache:
        return cache[key]
    nodes: dict[int, list[tuple[Any, ...]]] = {}
    for node, negate, vendor, product, *spec in con.execute(
            "SELECT node, negate, vendor, product, version, update_, start_incl, start_excl, "
            "end_incl, end_excl FROM cpe_match WHERE cve = ? AND config = ? AND vulnerable = 0",
            (cve, config)):
        if not negate:  # a negated node says what must be absent: not judged, kept
            nodes.setdefault(node, []).append((vendor, product, Range(*spec)))
    ok = True
    for entries in nodes.values():
        names = {(v, p) for v, p, _ in entries}
        shown = [s for s in device if (s.vendor, s.product) in names]
        if shown and not any(rng.contains(s.version, s.update) for s in shown
                             for v, p, rng in entries if (v, p) == (s.vendor, s.product)):
            ok = False
            break
    cache[key] = ok
    return ok


def device_vulnerabilities(software: pl.DataFrame | None,
                           db_path: str | os.PathLike[str] | None = None) -> list[Vulnerability]:
    """The contract's ``Vulnerability`` list for ``device_software`` rows; [] when there is
    no CVE database (scoring without one is normal, not an error)."""
    path = Path(db_path) if db_path is not None else default_db()
    if not path.is_file() or software is None or software.height == 0:
        return []
    df = match(software, path)
    return [Vulnerability(cve=r["cve"], cvss=r["cvss"], cvss_version=r["cvss_version"],
                          severity=CvssSeverity(r["severity"]) if r["severity"] else None,
                          kev=r["kev"], matched_on=r["matched_on"], product=r["product"],
                          device_id=r["device_id"], description=r["description"])
            for r in df.iter_rows(named=True)]


def with_vulnerabilities(devices: pl.DataFrame, software: pl.DataFrame | None,
                         db_path: str | os.PathLike[str] | None = None
                         ) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """``devices`` (an inventory) with ``vulnerabilities``, how many known CVEs its software
    has, and ``cves``, their identifiers (exploited ones first, then by CVSS), and the
    ``Vulnerability`` records themselves, in the same order: what ``inventory`` and ``score``
    list. Without a CVE database both are empty."""
    import polars as pl

    found = device_vulnerabilities(software, db_path)
    found.sort(key=lambda v: (v.device_id, not v.kev, -(v.cvss or 0.0), v.cve))
    per: dict[str, list[str]] = {}
    for v in found:
        per.setdefault(v.device_id, []).append(v.cve)
    ids = devices["device_id"].to_list() if devices.height else []
    return devices.with_columns(
        pl.Series("vulnerabilities", [len(per.get(d, [])) for d in ids], dtype=pl.Int64),
        pl.Series("cves", [per.get(d, []) for d in ids], dtype=pl.List(pl.String)),
    ), [v.to_dict() for v in found]


__all__ = ["DB_VERSION", "DatabaseError", "FeedError", "MATCH_COLUMNS", "Range",
           "UpdateSummary", "compare_versions", "connect", "cpe_name_part", "default_db",
           "describe_db", "device_vulnerabilities", "match", "split_cpe", "update",
           "version_key", "with_vulnerabilities"]

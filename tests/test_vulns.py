"""Issue 14, part 3: known vulnerabilities, offline. The tests write tiny NVD CVE JSON 2.0 feeds
and KEV catalogues themselves (tests/nvdfeed.py); nothing is downloaded."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nvdfeed import config, cpe, entry, feed, kev, match, metric, write
from typer.testing import CliRunner

from flockwatch.serving import vulns
from flockwatch.serving.cli import app
from flockwatch.serving.contract import CvssSeverity, Severity, Vulnerability, json_schema
from flockwatch.serving.vulns import (
    FeedError,
    Range,
    compare_versions,
    device_vulnerabilities,
    split_cpe,
    update,
    version_key,
)

SSH = cpe("openbsd", "openssh")

# --- versions -------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "want"), [
    ("1.0.2k", "1.0.2", 1),          # OpenSSL patch letters come after the release
    ("1.0.2k", "1.0.2l", -1),
    ("1.0.2za", "1.0.2z", 1),
    ("1.0.2", "1.0.2a", -1),
    ("7.4p1", "7.4", 1),             # OpenSSH portable
    ("7.4p1", "7.4p2", -1),
    ("7.4p1", "7.5", -1),
    ("2.4.1-rc1", "2.4.1", -1),      # release candidates come before the release
    ("2.4.1rc1", "2.4.1-rc2", -1),
    ("2.4.1-rc1", "2.4.0", 1),
    ("1.0a1", "1.0", -1),            # an alpha, since a number follows the letter
    ("2.0beta", "2.0", -1),
    ("2.0-dev", "2.0-alpha", -1),
    ("1.0", "1.0.0", 0),
    ("1.0.0-rc1", "1.0-rc1", 0),
    ("v1.2", "1.2", 0),
    ("V5.5.0 build 180725", "5.5.0", 1),
    ("1.10", "1.9", 1),
    ("2.4.1", "2.4.1.1", -1),
    ("2.4.1a", "2.4.1.1", -1),       # a patch letter comes before the next number
    ("00012", "12", 0),
    ("1" + "0" * 5000, "9" * 4000, 1),  # no int() of a huge digit string
    ("2.6.32-5-amd64", "2.6.32", 1),
])
def test_compare_versions(a: str, b: str, want: int) -> None:
    assert compare_versions(a, b) == want
    assert compare_versions(b, a) == -want


@pytest.mark.parametrize("text", ["*", "-", "", "  ", "n/a", "unknown", None])
def test_versions_without_digits_do_not_compare(text: str | None) -> None:
    assert version_key(text) is None
    assert compare_versions(text, "1.0") is None


@given(st.lists(st.text(alphabet="0123456789.-_ abcdkpruvz", max_size=12), min_size=3,
                max_size=3))
def test_version_order_is_a_total_order(vs: list[str]) -> None:
    a, b, c = vs
    ab, bc, ac = compare_versions(a, b), compare_versions(b, c), compare_versions(a, c)
    if None in (ab, bc, ac):
        return
    assert compare_versions(a, a) == 0
    assert compare_versions(b, a) == -ab  # type: ignore[operator]
    if ab <= 0 and bc <= 0:  # type: ignore[operator]
        assert ac <= 0  # type: ignore[operator]


@given(st.text(max_size=40))
def test_version_key_never_raises(text: str) -> None:
    version_key(text)


# --- CPE names and ranges -------------------------------------------------------------------

def test_split_cpe() -> None:
    f = split_cpe("cpe:2.3:a:OpenBSD:OpenSSH:7.4:p1:*:*:*:*:*:*")
    assert f is not None and f[2:7] == ["a", "openbsd", "openssh", "7.4", "p1"]
    esc = split_cpe(r"cpe:2.3:h:acme:rv\:320\/x:-:*:*:*:*:*:*:*")
    assert esc is not None and esc[4] == "rv:320/x" and esc[5] == "-"
    for bad in ["cpe:/a:openbsd:openssh:7.4", "cpe:2.3:a:openbsd:openssh", "cpe:2.3:x:a:b:*:*:*"
                ":*:*:*:*:*", "cpe:2.3:a:*:openssh:*:*:*:*:*:*:*:*", "openssh 7.4",
                "cpe:2.3:a:a:b:*:*:*:*:*:*:*:*\\"]:
        assert split_cpe(bad) is None, bad


def test_ranges() -> None:
    below = Range("*", "*", end_excl="7.4")
    assert below.contains("7.3") and below.contains("6.6p1")
    assert not below.contains("7.4") and not below.contains("7.4p1")
    assert not below.contains(None), "an unknown version is not taken as affected"
    assert not below.contains("unknown")
    span = Range("*", "*", start_incl="2.0", end_incl="2.4.1")
    assert span.contains("2.0") and span.contains("2.4.1") and span.contains("2.4.1-rc1")
    assert not span.contains("1.9.9") and not span.contains("2.4.1a")
    assert Range("*", "*", start_excl="1.0", end_excl="2.0").contains("1.0.1")
    assert not Range("*", "*", start_excl="1.0").contains("1.0.0")
    assert Range("*", "*").contains(None) and Range("-", "-").contains("3.1")
    exact = Range("7.4", "p1")
    assert exact.contains("7.4p1") and exact.contains("7.4", "p1")
    assert not exact.contains("7.4") and not exact.contains("7.4p2")
    assert Range("1.0.2k", "*").contains("1.0.2K")
    assert not Range("1.0.2k", "*").contains("1.0.2")
    assert below.text() == "< 7.4" and span.text() == ">= 2.0, <= 2.4.1"


# --- the database ---------------------------------------------------------------------------

def _feed(tmp_path: Path, name: str = "nvdcve-2.0-2024.json", gz: bool = False) -> Path:
    entries = [
        # every OpenSSH before 7.4; CVSS 3.1 preferred over 4.0 and 2.0
        entry("CVE-2016-10009", [config([match(SSH, versionEndExcluding="7.4")])],
              [metric("2.0", 7.5, "HIGH"), metric("4.0", 8.6, "HIGH"),
               metric("3.1", 7.3, "HIGH", "Secondary"), metric("3.1", 7.8, "HIGH")],
              description="untrusted search path " * 30),
        # a closed range, CVSS 4.0 only
        entry("CVE-2023-0001", [config([match(cpe("acme", "web_server"),
                                              versionStartIncluding="2.0",
                                              versionEndIncluding="2.4.1")])],
              [metric("4.0", 9.3, "CRITICAL")]),
        # an exact version with its update field, CVSS 2 only (severity at the metric level)
        entry("CVE-2023-0002", [config([match(cpe("openbsd", "openssh", "7.4", update="p1"))])],
              [metric("2.0", 5.0, "MEDIUM")]),
        # firmware on hardware: AND configuration, the platform not vulnerable
        entry("CVE-2023-0003", [config([match(cpe("acme", "cam_firmware", "-", part="o"))],
                                       [match(cpe("acme", "cam_x1", "-", part="h"), False)],
                                       operator="AND")], [metric("3.0", 6.1)]),
        # an application only on an old platform OS
        entry("CVE-2023-0004", [config([match(cpe("acme", "agent"))],
                                       [match(cpe("acme", "rtos", part="o"), False,
                                              versionEndExcluding="3.0")],
                                       operator="AND")], [metric("3.1", 4.0, "MEDIUM")]),
        # rejected: never reported
        entry("CVE-2023-0005", [config([match(SSH)])], [metric("3.1", 10.0, "CRITICAL")],
              status="Rejected"),
        # no configuration yet (awaiting analysis): in the database, matches nothing
        entry("CVE-2023-0006", [], [metric("3.1", 9.8, "CRITICAL")]),
        # a platform-only criteria outside an AND configuration is not a match
        entry("CVE-2023-0007", [config([match(SSH, False)])], [metric("3.1", 9.0)]),
    ]
    return write(tmp_path / (name + (".gz" if gz else "")), feed(entries), gz=gz)


def _software(*rows: tuple[str, str | None, str | None, str | None, str | None]
              ) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(("device_id", "vendor", "product", "version", "cpe"), r,
                                  strict=True)) | {"source": "payload", "role": "software",
                                                   "evidence": "ssh_banner", "raw": "x"}
                         for r in rows],
                        schema={"device_id": pl.String, "vendor": pl.String,
                                "product": pl.String, "version": pl.String, "cpe": pl.String,
                                "source": pl.String, "role": pl.String, "evidence": pl.String,
                                "raw": pl.String})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "vulns.sqlite"
    update([_feed(tmp_path)], kev=write(tmp_path / "kev.json", kev(["CVE-2016-10009"])),
           db=path)
    return path


def test_import_counts_and_list(db: Path) -> None:
    d = vulns.describe_db(db)
    assert d["cves"] == 7 and d["kev"] == 1  # 8 entries less the rejected one
    assert d["cves_with_cpe"] == 5  # CVE-2023-0006 has none, 0007 only a platform
    assert {f["kind"] for f in d["feeds"]} == {"nvd", "kev"}
    nvd = next(f for f in d["feeds"] if f["kind"] == "nvd")
    assert nvd == {**nvd, "file": "nvdcve-2.0-2024.json", "timestamp": "2024-06-01T00:00:00.000",
                   "entries": 8}


def test_match_rules(db: Path) -> None:
    sw = _software(
        ("ssh-old", "OpenBSD", "OpenSSH", "7.2p2", None),
        ("ssh-new", "OpenBSD", "OpenSSH", "7.4p2", None),
        ("ssh-74p1", None, None, None, cpe("openbsd", "openssh", "7.4p1")),
        ("ssh-nover", "OpenBSD", "OpenSSH", None, None),
        ("web", "Acme", "Web Server", "2.4.1-rc1", None),
        ("web-new", "Acme", "Web Server", "2.4.2", None),
        ("cam", "Acme", "cam_firmware", "5.1", None),
        ("agent-old", "Acme", "agent", "1.0", None),
        ("agent-old", "Acme", "RTOS", "2.2", None),
        ("agent-new", "Acme", "agent", "1.0", None),
        ("agent-new", "Acme", "RTOS", "3.1", None),
        ("agent-alone", "Acme", "agent", "1.0", None),
        (None, "OpenBSD", "OpenSSH", "1.0", None),
    )
    got = vulns.match(sw, db)
    assert got.columns == list(vulns.MATCH_COLUMNS)
    pairs = set(zip(got["device_id"], got["cve"], strict=True))
    assert pairs == {
        ("ssh-old", "CVE-2016-10009"),
        ("ssh-74p1", "CVE-2023-0002"),    # not before 7.4, but the exact 7.4 p1
        ("web", "CVE-2023-0001"),
        ("cam", "CVE-2023-0003"),         # the hardware not shown: assumed present
        ("agent-old", "CVE-2023-0004"),   # the platform shown and in range
        ("agent-alone", "CVE-2023-0004"),
    }
    row = got.filter(pl.col("device_id") == "ssh-old").row(0, named=True)
    assert row["cvss"] == 7.8 and row["cvss_version"] == "3.1"  # the Primary 3.1 one
    assert row["severity"] == "high" and row["kev"] is True
    assert row["matched_on"] == "cpe:2.3:a:openbsd:openssh:*:*:*:*:*:*:*:* < 7.4"
    assert row["product"] == "OpenBSD OpenSSH 7.2p2"
    assert len(row["description"]) == 200
    web = got.filter(pl.col("device_id") == "web").row(0, named=True)
    assert (web["cvss"], web["cvss_version"], web["severity"]) == (9.3, "4.0", "critical")
    assert web["matched_on"].endswith(":* >= 2.0, <= 2.4.1") and web["kev"] is False
    v2 = got.filter(pl.col("cve") == "CVE-2023-0002").row(0, named=True)
    assert (v2["cvss"], v2["cvss_version"], v2["severity"]) == (5.0, "2.0", "medium")
    assert v2["product"] == "openbsd openssh 7.4p1"
    cam = got.filter(pl.col("device_id") == "cam").row(0, named=True)
    assert cam["severity"] == "medium"  # no rating given: from the score (6.1)


def test_matches_are_kept_per_device_until_the_database_changes(
        db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The live sensor matches every window: a device showing the same software again is
    answered from memory (the database is not opened), one whose software changed is matched
    afresh (with its platform: AND configurations depend on the whole set), and a database
    rewritten by `vulns update` (a new file) is read again."""
    old = _software(("agent", "Acme", "agent", "1.0", None), ("agent", "Acme", "RTOS", "2.2", None),
                    ("ssh", "OpenBSD", "OpenSSH", "7.2p2", None))
    first = vulns.match(old, db)
    opened: list[object] = []
    real = vulns.connect
    monkeypatch.setattr(vulns, "connect", lambda p: opened.append(p) or real(p))
    assert vulns.match(old, db).equals(first) and opened == []
    new = old.with_columns(pl.when(pl.col("product") == "RTOS").then(pl.lit("3.1"))
                           .otherwise(pl.col("version")).alias("version"))
    got = vulns.match(new, db)
    assert len(opened) == 1  # the agent's set changed: matched afresh, ssh from memory
    assert set(zip(got["device_id"], got["cve"], strict=True)) == {("ssh", "CVE-2016-10009")}
    update([_feed(tmp_path, "nvdcve-2.0-2025.json")], kev=None, db=db)  # rewritten
    before = len(opened)
    vulns.match(old, db)
    assert len(opened) == before + 1


def test_device_vulnerabilities_contract(db: Path, tmp_path: Path) -> None:
    sw = _software(("aa:01", "OpenBSD", "OpenSSH", "6.6.1p1", None),
                   ("aa:01", "Acme", "Web Server", "2.1", None))
    found = device_vulnerabilities(sw, db)
    assert [v.cve for v in found] == ["CVE-2023-0001", "CVE-2016-10009"]  # highest CVSS first
    assert all(isinstance(v, Vulnerability) for v in found)
    assert found[0].severity is CvssSeverity.CRITICAL
    assert found[0].severity.severity is Severity.HIGH
    for v in found:
        jsonschema.validate(v.to_dict(), json_schema(Vulnerability))
    assert device_vulnerabilities(sw, tmp_path / "none.sqlite") == []
    assert device_vulnerabilities(sw.clear(), db) == []


def test_vulnerability_schema() -> None:
    s = json_schema(Vulnerability)
    assert s["required"] == ["cve", "cvss", "cvss_version", "severity", "kev", "matched_on",
                             "product", "device_id"]
    assert s["properties"]["severity"] == {
        "enum": ["none", "low", "medium", "high", "critical", None]}
    v = Vulnerability("CVE-2016-10009", 7.8, "3.1", CvssSeverity.HIGH, True, "m", "p", "d")
    assert "description" not in v.to_dict()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**v.to_dict(), "kev": "yes"}, s)


def test_gzip_feed_and_the_latest_modified_copy_wins(tmp_path: Path) -> None:
    db = tmp_path / "v.sqlite"
    newer = write(tmp_path / "nvdcve-2.0-modified.json", feed([
        entry("CVE-2016-10009", [config([match(SSH, versionEndExcluding="7.5")])],
              [metric("3.1", 5.5)], modified="2024-05-01T00:00:00.000"),
        entry("CVE-2023-0001", [], status="Rejected", modified="2024-05-01T00:00:00.000")]))
    update([newer, _feed(tmp_path, gz=True)], db=db)  # the yearly feed after the newer one
    sw = _software(("d", "openbsd", "openssh", "7.4", None),
                   ("w", "acme", "web_server", "2.1", None))
    got = vulns.match(sw, db)
    assert got["cve"].to_list() == ["CVE-2016-10009"]
    assert got["matched_on"][0].endswith("< 7.5") and got["cvss"][0] == 5.5
    # adding a feed keeps what is there; --fresh starts over
    update([write(tmp_path / "one.json", feed([entry("CVE-2099-0001")]))], db=db)
    assert vulns.describe_db(db)["cves"] == 7
    update([write(tmp_path / "one.json", feed([entry("CVE-2099-0001")]))], db=db, fresh=True)
    assert vulns.describe_db(db)["cves"] == 1


def test_the_stream_reads_across_buffer_edges(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = _feed(tmp_path)
    want = tmp_path / "a.sqlite"
    update([path], db=want)
    monkeypatch.setattr(vulns._JsonStream, "CHUNK", 7)  # every value split across reads
    got = tmp_path / "b.sqlite"
    update([path], db=got)
    dump = [vulns.describe_db(p) | {"db": None, "updated": None, "feeds": None}
            for p in (want, got)]
    assert dump[0] == dump[1]
    sw = _software(("d", "openbsd", "openssh", "7.2", None))
    assert vulns.match(sw, want).equals(vulns.match(sw, got))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("doc", "problem"), [
    ("{", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8 text"),
    ({"format": "NVD_CVE"}, "not an NVD CVE JSON 2.0 feed: no 'vulnerabilities' list"),
    ({"vulnerabilities": {}}, "'vulnerabilities' is not a list"),
    ({"CVE_Items": []}, "an NVD 1.1 feed"),
    (kev(["CVE-2020-0001"]), "the CISA KEV catalogue: give it with --kev"),
    (feed([entry("CVE-2024-0001"), {"cve": {"id": "CVE-24-1"}}]),
     "entry 2: cve.id: expected CVE-YYYY-NNNN"),
    (feed([entry("CVE-2024-0001", [config([match("cpe:/a:x:y:1.0")])])]),
     "entry 1 (CVE-2024-0001): configurations[0].nodes[0].cpeMatch[0].criteria: not a CPE 2.3 "
     "name"),
    (feed([entry("CVE-2024-0001", [config([{"criteria": SSH, "vulnerable": "yes"}])])]),
     "entry 1 (CVE-2024-0001): configurations[0].nodes[0].cpeMatch[0].vulnerable: expected "
     "true/false"),
    (feed([entry("CVE-2024-0001", [], [metric("3.1", 11.0)])]),
     "entry 1 (CVE-2024-0001): metrics.cvssMetricV31[0].cvssData.baseScore: expected a number "
     "from 0 to 10, found 11.0"),
    ('{"vulnerabilities": [{"cve": {"id": "CVE-2024-0001"}}, {"cve": }]}',
     "entry 2: not valid JSON"),
    ('{"vulnerabilities": []} trailing', "not valid JSON: extra data after the top-level object"),
])
def test_a_malformed_feed_leaves_the_database_intact(db: Path, tmp_path: Path, doc: object,
                                                     problem: str) -> None:
    bad = tmp_path / "nvdcve-2.0-bad.json"
    if isinstance(doc, bytes):
        bad.write_bytes(doc)
    elif isinstance(doc, str):
        bad.write_text(doc)
    else:
        write(bad, doc)
    before = _digest(db)
    with pytest.raises(FeedError) as err:
        update([_feed(tmp_path, "good.json"), bad], db=db)
    assert str(err.value).startswith(f"{bad}: {problem}"), str(err.value)
    assert "\n" not in str(err.value)
    assert _digest(db) == before
    assert sorted(p.name for p in db.parent.iterdir() if p.name.startswith(".")) == []


def test_a_truncated_gzip_feed(db: Path, tmp_path: Path) -> None:
    data = gzip.compress(json.dumps(feed([entry(f"CVE-2024-{i:04d}") for i in range(1000, 1400)])
                                    ).encode())
    bad = tmp_path / "cut.json.gz"
    bad.write_bytes(data[: len(data) // 2])
    before = _digest(db)
    with pytest.raises(FeedError, match=r"cut\.json\.gz: "):
        update([bad], db=db)
    assert _digest(db) == before


def test_a_bad_kev_file(db: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "kev.json", {"vulnerabilities": [{"cveID": "CVE-2024-0001"},
                                                            {"cveID": 7}]})
    with pytest.raises(FeedError, match=r"kev\.json: entry 2: cveID: expected CVE-YYYY-NNNN"):
        update([], kev=bad, db=db)
    assert vulns.describe_db(db)["kev"] == 1


def test_a_database_of_another_kind_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not sqlite at all" * 100)
    with pytest.raises(vulns.DatabaseError, match="not a flockwatch CVE database"):
        vulns.connect(junk)
    with pytest.raises(vulns.DatabaseError, match="no CVE database here"):
        vulns.connect(tmp_path / "absent.sqlite")


# --- hostile feeds --------------------------------------------------------------------------

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=True),
                  st.text(max_size=12), st.sampled_from([SSH, "cpe:2.3:a:x", "7.4", "CVE-1-1"]))


def _mutate(draw: st.DrawFn, value: object, depth: int = 0) -> object:
    """A well-formed entry with a few values swapped for hostile ones, anywhere inside."""
    if depth > 6 or draw(st.integers(0, 9)) == 0:
        return draw(_leaf) if draw(st.booleans()) else value
    if isinstance(value, dict):
        out = {k: _mutate(draw, v, depth + 1) for k, v in value.items()}
        if draw(st.integers(0, 5)) == 0 and out:
            out.pop(draw(st.sampled_from(sorted(out))))
        return out
    if isinstance(value, list):
        return [_mutate(draw, v, depth + 1) for v in value]
    return value


@st.composite
def hostile_entries(draw: st.DrawFn) -> list[object]:
    base = [entry("CVE-2016-10009", [config([match(SSH, versionEndExcluding="7.4")]),
                                     config([match(cpe("a", "b"))], [match(cpe("a", "c"), False)],
                                            operator="AND")],
                  [metric("3.1", 7.8, "HIGH"), metric("2.0", 5.0, "MEDIUM")])]
    return [_mutate(draw, e) for e in base * draw(st.integers(1, 3))]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_entries())
def test_hostile_entries_never_crash_the_import(tmp_path_factory: pytest.TempPathFactory,
                                                entries: list[object]) -> None:
    """A malformed entry is one FeedError line naming the file and the entry, the database
    untouched; a well-formed one imports. Nothing else may escape."""
    tmp = tmp_path_factory.mktemp("hostile")
    db = tmp / "v.sqlite"
    update([write(tmp / "good.json", feed([entry("CVE-2000-0001")]))], db=db)
    before = _digest(db)
    bad = write(tmp / "f.json", feed(entries))
    try:
        update([bad], db=db)
    except FeedError as exc:
        assert str(exc).startswith(f"{bad}: "), str(exc)
        assert "\n" not in str(exc)
        assert _digest(db) == before
        return
    sw = _software(("d", "openbsd", "openssh", "7.2", None))
    vulns.match(sw, db)


# --- the command line -----------------------------------------------------------------------

def test_cli_update_list_match(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "cli.sqlite"
    f = _feed(tmp_path)
    k = write(tmp_path / "kev.json", kev(["CVE-2016-10009"]))
    r = runner.invoke(app, ["vulns", "update", "--nvd-feed", str(f), "--kev", str(k),
                            "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert "8 entries: 7 CVEs imported (1 rejected removed)" in r.stdout
    assert "KEV: 1 entries" in r.stdout
    r = runner.invoke(app, ["vulns", "list", "--db", str(db), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["cves"] == 7
    r = runner.invoke(app, ["vulns", "list", "--db", str(db)])
    assert "7 CVEs" in r.stdout and "nvdcve-2.0-2024.json" in r.stdout
    sw = tmp_path / "software.json"
    sw.write_text(json.dumps([{"device_id": "aa:01", "vendor": "OpenBSD", "product": "OpenSSH",
                               "version": "7.2p2", "cpe": None}]))
    r = runner.invoke(app, ["vulns", "match", str(sw), "--db", str(db), "--format", "json"])
    assert r.exit_code == 0, r.output
    [v] = json.loads(r.stdout)
    jsonschema.validate(v, json_schema(Vulnerability))
    assert v["cve"] == "CVE-2016-10009" and v["kev"] is True
    r = runner.invoke(app, ["vulns", "match", str(sw), "--db", str(db)])
    assert "CVE-2016-10009" in r.stdout and "< 7.4" in r.stdout


def test_cli_several_feeds_after_one_option(tmp_path: Path) -> None:
    """``--nvd-feed nvdcve-2.0-*.json`` as a shell expands it: one option, several files."""
    db = tmp_path / "v.sqlite"
    a = write(tmp_path / "a.json", feed([entry("CVE-2024-0001")]))
    b = write(tmp_path / "b.json", feed([entry("CVE-2024-0002")]))
    r = CliRunner().invoke(app, ["vulns", "update", "--db", str(db), "--nvd-feed", str(a),
                                 str(b)])
    assert r.exit_code == 0, r.output
    assert vulns.describe_db(db)["cves"] == 2


def _one_error_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flockwatch: error: "), r.stderr
    return lines[0]


def test_cli_bad_inputs_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "v.sqlite"
    update([_feed(tmp_path)], db=db)
    before = _digest(db)
    bad = write(tmp_path / "bad.json", feed([entry("CVE-2024-0001", [config([match("x")])])]))
    line = _one_error_line(runner.invoke(app, ["vulns", "update", "--nvd-feed", str(bad),
                                               "--db", str(db)]))
    assert line == (f"flockwatch: error: {str(bad)!r}: entry 1 (CVE-2024-0001): configurations"
                    "[0].nodes[0].cpeMatch[0].criteria: not a CPE 2.3 name: \"x\"")
    assert _digest(db) == before
    line = _one_error_line(runner.invoke(app, ["vulns", "update", "--nvd-feed",
                                               str(tmp_path / "absent.json"), "--db", str(db)]))
    assert line.endswith("absent.json': no such file")
    line = _one_error_line(runner.invoke(app, ["vulns", "update", "--nvd-feed", str(tmp_path),
                                               "--db", str(db)]))
    assert line.endswith("is a folder, expected a feed file")
    line = _one_error_line(runner.invoke(app, ["vulns", "update", "--db", str(db)]))
    assert "--nvd-feed" in line
    line = _one_error_line(runner.invoke(app, ["vulns", "list", "--db",
                                               str(tmp_path / "none.sqlite")]))
    assert "no CVE database here" in line
    sw = tmp_path / "sw.json"
    sw.write_text("[1, 2]")
    line = _one_error_line(runner.invoke(app, ["vulns", "match", str(sw), "--db", str(db)]))
    assert "expected a JSON array of objects" in line


def test_cli_help_explains() -> None:
    r = CliRunner().invoke(app, ["vulns", "--help"])
    assert r.exit_code == 0 and "docs/vulns.md" in r.stdout
    r = CliRunner().invoke(app, ["vulns", "update", "--help"])
    assert "--nvd-feed" in r.stdout and "--kev" in r.stdout and "atomically" in r.stdout


def test_inventory_and_score_list_the_devices_cves(db: Path, tmp_path: Path) -> None:
    """The software a device shows (an old OpenSSH banner) is matched against the database:
    the inventory's `vulnerabilities`/`cves` and the score report's `vulnerabilities`, valid
    against the report's schema; without the database nothing is listed, and a bad
    `--vulns-db` fails in one line before any capture is read."""
    from test_payload import SERVER, Conversation

    from flockwatch.datasets.pcap import PcapWriter
    from flockwatch.features import extract
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.serving.score import SCORE_JSON_SCHEMA, report

    w = PcapWriter()
    (Conversation(w, 22).server(b"SSH-2.0-OpenSSH_7.2p2 Ubuntu-4ubuntu2.8\r\n")
     .client(b"SSH-2.0-OpenSSH_8.4p1\r\n").close())
    cap = tmp_path / "ssh.pcap"
    w.write(cap)
    runner = CliRunner()
    r = runner.invoke(app, ["inventory", str(cap), "--vulns-db", str(db), "--format", "json"])
    assert r.exit_code == 0, r.output
    devices = {d["ip"] if "ip" in d else d["ips"][0]: d for d in json.loads(r.stdout)}
    server = devices[SERVER[1]]
    assert server["cves"][0] == "CVE-2016-10009" and server["vulnerabilities"] >= 1
    assert all(d["vulnerabilities"] == 0 for ip, d in devices.items() if ip != SERVER[1])
    flows = extract([cap]).flows
    rep = report(Bundle(window=WindowSpec(300)), flows, [], vulns_db=db)
    doc = json.loads(rep.to_json())
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    [v] = [v for v in doc["vulnerabilities"] if v["cve"] == "CVE-2016-10009"]
    assert v["kev"] is True and v["cvss"] == 7.8 and "< 7.4" in v["matched_on"]
    assert "7.2p2" in v["product"]
    assert report(Bundle(window=WindowSpec(300)), flows, [],
                  vulns_db=tmp_path / "none.sqlite").vulnerabilities == []
    bad = runner.invoke(app, ["inventory", str(cap), "--vulns-db", str(tmp_path / "none.sqlite")])
    assert bad.exit_code == 1 and "--vulns-db" in bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1

"""Issue 18, items 4-6 (and issue 17's "errors before any output"): every failure of every
command is one line, ``flockwatch: error: <input or option>: <problem>``, exit 1; options are
checked at the boundary; output paths are checked before the work and name the path."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_pcap
from typer.testing import CliRunner

from flockwatch.serving.cli import app

FLOCKWATCH = str(Path(sys.executable).parent / "flockwatch")


@pytest.fixture
def cap(tmp_path: Path) -> Path:
    return small_pcap(tmp_path / "good.pcap")


def one_error_line(r) -> str:
    """The run failed with exactly one line on stderr, in the project's format."""
    assert r.exit_code == 1, (r.exit_code, r.output)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("flockwatch: error: "), lines[0]
    assert "Traceback" not in r.output
    return lines[0]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed console script: the exit status and streams a shell sees."""
    return subprocess.run([FLOCKWATCH, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})


# -- item 6: one failure format -------------------------------------------------------------

@pytest.mark.parametrize("args,name", [
    (["extract", "--format", "xml", "x.pcap"], "--format"),  # no such option for extract
    (["inventory", "--format", "xml", "x.pcap"], "--format"),  # not one of table/json/csv
    (["score", "--format", "xml", "x.pcap"], "--format"),
    (["serve", "--port", "abc"], "--port"),
    (["extract"], "SOURCE"),  # a missing SOURCE
    (["inventory"], "SOURCE"),
    (["score"], "SOURCE"),
    (["extract", "--bogus", "x.pcap"], "--bogus"),
    (["evaluate"], "DATASET_DIR"),
    (["sense"], "--interface"),
    (["datasets", "synthesize"], "--output"),
    (["train", "classifier"], "DATASET_DIR"),
    (["train", "nope"], "train"),
])
def test_usage_errors_are_one_line_exit_1(args, name):
    line = one_error_line(CliRunner().invoke(app, args))
    assert line.startswith(f"flockwatch: error: {name}"), line
    assert f"flockwatch {args[0]}" in line  # where to read the help


def test_usage_error_through_the_console_script():
    """Exit status and stream as a shell sees them (click's usage box exits 2)."""
    p = run("serve", "--port", "abc")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "flockwatch: error: --port: 'abc': expected a port number 1-65535 "
        "(see 'flockwatch serve --help')"]


def test_single_bad_input_one_line_no_output_file(tmp_path):
    out = tmp_path / "flows.parquet"
    r = CliRunner().invoke(app, ["extract", str(tmp_path / "nope.pcap"), "-o", str(out)])
    line = one_error_line(r)
    assert line == f"flockwatch: error: {str(tmp_path / 'nope.pcap')!r}: no such file or folder"
    assert not out.exists() and r.stdout == ""
    # score too (here the missing model is named first), and writes no report
    r = CliRunner().invoke(app, ["score", str(tmp_path / "nope.pcap"), "-o", str(out)])
    one_error_line(r)
    assert not out.exists()


def test_errors_come_before_any_output(tmp_path):
    """Issue 17: `inventory /nonexistent.pcap` printed an empty table before its error."""
    p = run("inventory", str(tmp_path / "nonexistent.pcap"))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == (f"flockwatch: error: {str(tmp_path / 'nonexistent.pcap')!r}: "
                        "no such file or folder\n")


def test_every_bad_input_listed_when_none_could_be_read(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    b.write_text("not a capture")
    r = CliRunner().invoke(app, ["inventory", str(a), str(b)])
    assert r.exit_code == 1 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all(x.startswith("flockwatch: error: ") for x in lines)


def test_names_are_quoted_and_cannot_split_the_line(tmp_path, cap):
    evil = tmp_path / "a\nflockwatch: error: forged\x1b[2J.pcap"
    r = CliRunner().invoke(app, ["extract", str(evil)])
    line = one_error_line(r)
    assert "\\nflockwatch: error: forged\\x1b[2J.pcap'" in line
    # in a batch that goes on, the list of bad inputs is one line per input too
    r = CliRunner().invoke(app, ["extract", str(cap), str(evil), "-o",
                                 str(tmp_path / "f.parquet")])
    assert r.exit_code == 1
    assert sum("forged" in x for x in r.stderr.splitlines()) == 1
    assert (tmp_path / "f.parquet").exists()


# -- item 5: options checked at the boundary ------------------------------------------------

@pytest.mark.parametrize("args,name,needle", [
    (["serve", "--port", "-1"], "--port", "1-65535"),
    (["serve", "--port", "65536"], "--port", "1-65535"),
    (["serve", "--port", "0"], "--port", "1-65535"),
    (["serve", "--max-request-mb", "nan"], "--max-request-mb", "nan"),
    (["serve", "--max-request-mb", "-1"], "--max-request-mb", "-1"),
    (["serve", "--max-request-mb", "inf"], "--max-request-mb", "inf"),
    (["serve", "--host", "bad host\n"], "--host", "'bad host\\n'"),
    (["extract", "--idle-timeout", "-5", "x.pcap"], "--idle-timeout", "-5"),
    (["extract", "--idle-timeout", "0", "x.pcap"], "--idle-timeout", "0"),
    (["train", "baseline", "--window", "99999999999999999999w", "x.pcap"], "--window",
     "366 days"),
    (["train", "baseline", "--window", "0s", "x.pcap"], "--window", "> 0"),
    (["train", "baseline", "--learning-period", "9" * 400, "x.pcap"], "--learning-period",
     "366 days"),
    (["train", "baseline", "--epochs", "0", "x.pcap"], "--epochs", "0"),
    (["train", "classifier", "--window", "-3s", "x"], "--window", "-3s"),
    (["train", "classifier", "--folds", "1", "x"], "--folds", "1"),
    (["sense", "-i", "lo", "--duration", "-1"], "--duration", "-1"),
    (["sense", "-i", "lo", "--duration", "nan"], "--duration", "nan"),
    (["sense", "-i", "lo", "--window", "5x"], "--window", "5x"),
    (["sense", "-i", "lo", "--syslog", "::1"], "--syslog", "[::1]:514"),
    (["sense", "-i", "lo", "--syslog", "host:99999"], "--syslog", "99999"),
    (["sense", "-i", "lo", "--syslog", "host:²"], "--syslog", "'host:²'"),
    (["sense", "-i", "lo", "--syslog-protocol", "tpc"], "--syslog-protocol", "tpc"),
    (["datasets", "synthesize", "-o", "x", "--hours", "-2"], "--hours", "-2"),
    (["demo", "--hours", "nan"], "--hours", "nan"),
])
def test_bad_option_values(args, name, needle):
    line = one_error_line(CliRunner().invoke(app, args))
    assert line.startswith(f"flockwatch: error: {name}"), line
    assert needle in line, line


def test_valid_syslog_targets_pass_the_boundary(tmp_path):
    """A good target is accepted (the run then fails on the missing interface, not on it)."""
    for target in ("10.0.0.5:514", "[::1]:6514", "siem.example.org", "[fe80::1%eth0]:514"):
        r = CliRunner().invoke(app, ["sense", "-i", "nosuchif0", "--syslog", target,
                                     "--syslog-protocol", "TCP", "--alerts",
                                     str(tmp_path / "a.jsonl")])
        line = one_error_line(r)
        assert "nosuchif0" in line and "--syslog" not in line, line


def test_syslog_sink_checks_its_target_at_start():
    """`--syslog host:99999` used to raise OverflowError at the first alert, uncaught."""
    from flockwatch.serving.alerts import SyslogCefSink

    with pytest.raises(ValueError, match="99999"):
        SyslogCefSink("host:99999")
    with pytest.raises(ValueError, match="brackets"):
        SyslogCefSink("::1")
    with pytest.raises(ValueError, match="udp or tcp"):
        SyslogCefSink("host:514", "tpc")
    sink = SyslogCefSink("[::1]:9")
    assert sink.addr == ("::1", 9) and sink.protocol == "udp"


def test_syslog_sink_sends_to_ipv6():
    """`[::1]:PORT` reaches an IPv6 listener (the sink used an IPv4 socket for every target)."""
    from flockwatch.serving.alerts import SyslogCefSink

    try:
        rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        rx.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    rx.settimeout(5)
    sink = SyslogCefSink(f"[::1]:{rx.getsockname()[1]}")
    sink.send({"kind": "new_device", "severity": "medium", "device_id": "d", "mac": None,
               "ip": "10.0.0.1", "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T00:05:00Z",
               "top_features": [], "message": "m"})
    assert b"CEF:0|flockwatch" in rx.recv(65535) and sink.failures == 0
    rx.close()


def test_parse_duration_is_bounded_and_finite():
    from flockwatch.features.windows import parse_duration

    for text in ("99999999999999999999w", "9" * 400, "367d"):
        with pytest.raises(ValueError, match="366 days"):
            parse_duration(text)
    assert parse_duration("366d") == 366 * 86400
    with pytest.raises(ValueError):
        parse_duration(float("nan"))


def test_output_suffix_matches_format(tmp_path, cap):
    r = CliRunner().invoke(app, ["extract", str(cap), "-o", str(tmp_path / "out.xml")])
    assert "write a .parquet or .csv file" in one_error_line(r)
    assert not (tmp_path / "out.xml").exists()
    r = CliRunner().invoke(app, ["inventory", str(cap), "--format", "json", "-o",
                                 str(tmp_path / "inv.csv")])
    assert "does not match --format json" in one_error_line(r)
    # without --format the suffix decides: JSON, not a table, in inv.json
    r = CliRunner().invoke(app, ["inventory", str(cap), "-o", str(tmp_path / "inv.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "inv.json").read_text())[0]["device_id"]


def test_busy_port_names_the_address():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        p = run("serve", "--port", str(port))
    finally:
        s.close()
    assert p.returncode == 1
    assert p.stderr == (f"flockwatch: error: 127.0.0.1:{port}: address already in use "
                        "(another server listens there)\n")


# -- item 4: output paths -------------------------------------------------------------------

def _procfs() -> None:
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")


def output_cases(cap: Path, tmp: Path) -> list[tuple[list[str], str, str, str]]:
    """(arguments, option, path, what the line says) for each output the issue lists."""
    cases = [
        (["extract", str(cap)], "-o", str(cap / "x.parquet"), "is not a folder"),
        # a folder is a partitioned dataset (docs/scaling.md), never one holding other files
        (["extract", str(cap)], "-o", str(tmp), "folder holds other files"),
        (["inventory", str(cap)], "-o", str(tmp), "is a folder"),
        (["extract", str(cap)], "-o", "/proc/x.parquet", "cannot create files in '/proc'"),
        (["score", str(cap)], "-o", "/proc/x/y.json", "cannot create files in '/proc'"),
        (["score", str(cap)], "--plot", "/proc/x/y.png", "cannot create files in '/proc'"),
        (["evaluate", str(tmp), "-m", "x"], "-o", "/proc/x/y.json", "'/proc'"),
        (["datasets", "synthesize"], "-o", str(cap), "is not a folder"),
        (["sense", "-i", "lo"], "--alerts", str(tmp), "is a folder"),
        (["sense", "-i", "lo"], "--inventory-db", str(tmp), "is a folder"),
        # A FIFO of our own, never /dev/null: code that replaces its output atomically would
        # replace the system's /dev/null when run as root.
        (["inventory", str(cap)], "-o", str(tmp / "fifo"), "not a regular file"),
    ]
    return [([*args, opt, path], "--output" if opt == "-o" else opt, path, needle)
            for args, opt, path, needle in cases]


@pytest.mark.parametrize("k", range(11))
def test_output_paths_checked_before_the_work(k, cap, tmp_path):
    _procfs()
    os.mkfifo(tmp_path / "fifo")
    args, option, path, needle = output_cases(cap, tmp_path)[k]
    r = CliRunner().invoke(app, args)
    line = one_error_line(r)
    assert line.startswith(f"flockwatch: error: {option} {path!r}: "), line
    assert needle in line, line
    # before the work: no model was looked for, nothing was printed
    assert "model" not in line and r.stdout == ""


def test_atomic_writer_names_the_path(tmp_path):
    from flockwatch.features.output import OutputError, write_atomic

    with pytest.raises(OutputError, match="is a folder"):
        write_atomic(tmp_path, lambda fh: fh.write("x"))
    with pytest.raises(OSError) as err:  # still an OSError for callers that catch those
        write_atomic("/proc/x/y.json", lambda fh: fh.write("x"))
    assert "/proc/x/y.json" in str(err.value)


def test_sense_without_tcpdump_is_one_line(tmp_path):
    """`sense` checks for its capture tool at start, before any model is loaded."""
    p = subprocess.run([FLOCKWATCH, "sense", "-i", "lo", "--alerts", str(tmp_path / "a.jsonl")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PATH": str(tmp_path)})  # no tcpdump on it
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == ("flockwatch: error: 'tcpdump': not found: live capture needs it "
                        "(apt-get install tcpdump)\n")

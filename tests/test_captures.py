"""Bad input: one line naming the input and the problem, no traceback, non-zero exit."""

import gzip
import struct
from pathlib import Path

import pytest
from conftest import small_pcap
from typer.testing import CliRunner

from flockwatch.datasets.pcap import ethernet, ipv4, udp
from flockwatch.features import InputError, read_capture
from flockwatch.features.captures import inspect_capture
from flockwatch.features.flows import read_source_file
from flockwatch.serving.cli import app


@pytest.fixture
def bad(tmp_path: Path) -> dict[str, Path]:
    files = {}
    (files.setdefault("empty", tmp_path / "empty.pcap")).write_bytes(b"")
    (files.setdefault("text", tmp_path / "notes.pcap")).write_text("this is not a capture\n")
    good = small_pcap(tmp_path / "good.pcap")
    files["good"] = good
    data = good.read_bytes()
    (files.setdefault("truncated", tmp_path / "truncated.pcap")).write_bytes(data[:-10])
    (files.setdefault("header_only", tmp_path / "cut.pcap")).write_bytes(data[:30])
    (files.setdefault("gz", tmp_path / "zipped.pcap")).write_bytes(gzip.compress(data))
    files["linktype"] = small_pcap(tmp_path / "zigbee.pcap", linktype=195)
    files["missing"] = tmp_path / "nope.pcap"
    return files


@pytest.mark.parametrize("kind,needle", [
    ("empty", "empty file"), ("text", "not a pcap or pcapng"), ("header_only", "truncated"),
    ("gz", "gzip"), ("missing", "no such file"),
])
def test_inspect_rejects_bad_files(bad, kind, needle):
    with pytest.raises(InputError) as err:
        read_capture(bad[kind])
    assert str(bad[kind]) in str(err.value) and needle in str(err.value)


def test_truncated_capture_keeps_flows_and_says_so(bad):
    info = inspect_capture(bad["truncated"])
    assert info.truncated_at is not None and info.packets == 2


def test_cli_batch_goes_on_and_lists_bad_files(bad):
    r = CliRunner().invoke(app, ["extract", str(bad["good"]), str(bad["empty"]),
                                 str(bad["text"]), str(bad["missing"]), str(bad["truncated"]),
                                 str(bad["linktype"]), "-o", str(bad["good"].parent / "f.parquet")])
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    out = r.output
    for k in ("empty", "text", "missing"):
        line = next(ln for ln in out.splitlines() if str(bad[k]) in ln)
        assert line.strip().startswith("error:")
    assert any(str(bad["truncated"]) in ln and "truncated" in ln for ln in out.splitlines())
    assert any(str(bad["linktype"]) in ln and "link type 195" in ln for ln in out.splitlines())
    import polars as pl

    flows = pl.read_parquet(bad["good"].parent / "f.parquet")
    assert set(flows["source"].unique()) == {str(bad["good"]), str(bad["truncated"])}


def test_cli_single_bad_file_exit_code(bad):
    r = CliRunner().invoke(app, ["inventory", str(bad["text"])])
    assert r.exit_code == 1 and "not a pcap" in r.output and "Traceback" not in r.output


def test_folder_without_captures(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    r = CliRunner().invoke(app, ["inventory", str(tmp_path)])
    assert r.exit_code == 1 and "holds no captures" in r.output


def test_unknown_interface():
    r = CliRunner().invoke(app, ["extract", "--interface", "nosuchif0", "--duration", "1"])
    assert r.exit_code == 1 and "'nosuchif0': no such network interface" in r.output


def test_output_is_atomic(tmp_path, bad, monkeypatch):
    """A failure while writing leaves neither a partial file nor temp files behind."""
    import polars as pl

    from flockwatch.features.output import write_parquet

    target = tmp_path / "out" / "flows.parquet"

    def boom(self, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError):
        write_parquet(pl.DataFrame({"a": [1]}), target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_linktype_struct_is_honest(tmp_path):
    p = small_pcap(tmp_path / "x.pcap", linktype=113)
    assert struct.unpack("<I", p.read_bytes()[20:24])[0] == 113
    assert inspect_capture(p).linktypes == (113,)


def test_atomic_output_permissions(tmp_path):
    """Outputs get the permissions a plain write would give (0666 less the umask, or those of
    the file they replace), not a temporary file's private 0600: a SIEM forwarder running as
    another user must be able to read a report."""
    import os

    from flockwatch.features.output import _umask, write_atomic

    new = tmp_path / "report.json"
    write_atomic(new, lambda fh: fh.write("{}"))
    assert new.stat().st_mode & 0o777 == 0o666 & ~_umask()
    kept = tmp_path / "private.json"
    kept.write_text("old")
    os.chmod(kept, 0o640)
    write_atomic(kept, lambda fh: fh.write("{}"))
    assert kept.stat().st_mode & 0o777 == 0o640 and kept.read_text() == "{}"


# Issue 18: hostile captures. Each is read whole, or says what it skipped, with a count.

def _records_pcap(path: Path, n: int = 40, huge: int | None = None, jump: int | None = None
                  ) -> Path:
    recs = []
    for i in range(n):
        frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02",
                         ipv4("192.168.0.2", "192.168.0.3", 17,
                              udp("192.168.0.2", "192.168.0.3", 5000 + i % 4, 53, b"x" * 20)))
        if i == huge:
            frame += bytes(262_145 - len(frame))
        sec = 0xFFFFFFFF if i == jump else 1_700_000_000 + i
        recs.append(struct.pack("<IIII", sec, 0, len(frame), len(frame)) + frame)
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(recs))
    return path


def _has_line(output: str, *needles: object) -> bool:
    """One line of ``output`` holds every needle (the input's name may be quoted)."""
    return any(all(str(n) in line for n in needles) for line in output.splitlines())


def test_record_above_snaplen_loses_no_packet(tmp_path):
    """One record with caplen 262,145 made libpcap stop: 3 of 40 packets kept, exit 0."""
    p = _records_pcap(tmp_path / "big.pcap", huge=3)
    flows, problems = read_capture(p)
    assert flows["packets"].sum() == 40
    (w,) = problems
    assert w.severity == "warning" and w.message.startswith("1 record ")
    assert "caplen above snaplen" in w.message
    r = CliRunner().invoke(app, ["extract", str(p), "-o", str(tmp_path / "f.parquet")])
    assert r.exit_code == 0 and _has_line(r.output, p, "1 record ", "caplen above snaplen")


def test_pcapng_packets_libpcap_drops_are_kept_or_counted(tmp_path):
    """pcapng EPBs with a huge caplen or an unknown interface id were lost in silence."""
    from fuzz.hostile import T0, epb, frame, idb, shb

    packets = [epb(0, (T0 + i) * 10**6, frame(i)) for i in range(20)]
    packets[3] = epb(0, (T0 + 3) * 10**6, frame(3) + bytes(262_145 - len(frame(3))))
    packets[5] = epb(0, (T0 + 5) * 10**6, frame(5), caplen=0xFFFFFFF0)
    packets[7] = epb(9, (T0 + 7) * 10**6, frame(7))
    p = tmp_path / "bad.pcapng"
    p.write_bytes(shb() + idb() + b"".join(packets))
    flows, problems = read_capture(p)
    assert flows["packets"].sum() == 19
    skipped = [x for x in problems if x.skipped]
    assert [(x.skipped, x.severity) for x in skipped] == [(1, "warning")]
    assert "interface" in skipped[0].message
    assert {"caplen above snaplen", "caplen past the block"} <= {
        m for x in problems for m in ("caplen above snaplen", "caplen past the block")
        if m in x.message}


@pytest.mark.parametrize("command", ["extract", "inventory"])
def test_timestamp_jump_keeps_flows_and_reports_the_record(tmp_path, command):
    """The 11th record's seconds set to 0xFFFFFFFF gave a polars ComputeError traceback."""
    p = _records_pcap(tmp_path / "jump.pcap", jump=10)
    flows, problems = read_capture(p)
    assert flows["packets"].sum() == 40
    assert flows["first_seen"].max().year == 2023  # no packet stamped in 2106 or 1969
    (w,) = problems
    assert w.severity == "warning" and "1 record given the previous record's time" in w.message
    args = [command, str(p)] + (["-o", str(tmp_path / "f.parquet")] if command == "extract"
                                else ["--format", "json"])
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output and _has_line(r.output, p, "previous record's time")


def test_capture_warnings_reach_the_score_json(tmp_path):
    """The problems entry of `score --format json` carries the skipped-record warning."""
    import json

    import polars as pl

    from flockwatch.features import extract
    from flockwatch.serving.score import ScoreReport

    result = extract([_records_pcap(tmp_path / "big.pcap", huge=3)])
    doc = json.loads(ScoreReport(pl.DataFrame(), pl.DataFrame(), [], result.problems).to_json())
    (entry,) = doc["problems"]
    assert entry["severity"] == "warning" and "caplen above snaplen" in entry["message"]


def test_file_kinds_get_their_own_message(tmp_path):
    """A FIFO or /dev/zero was an "empty file", a symlink loop "no such file"."""
    import os

    fifo = tmp_path / "pipe.pcap"
    os.mkfifo(fifo)
    (tmp_path / "a.pcap").symlink_to(tmp_path / "b.pcap")
    (tmp_path / "b.pcap").symlink_to(tmp_path / "a.pcap")
    for path, needle in ((fifo, "is a FIFO"), (Path("/dev/zero"), "is a character device"),
                         (tmp_path / "a.pcap", "symbolic link loop")):
        with pytest.raises(InputError) as err:
            read_capture(path)
        assert str(err.value).startswith(f"{path}: ") and needle in str(err.value)
    good = small_pcap(tmp_path / "good.pcap")
    r = CliRunner().invoke(app, ["extract", str(fifo), "/dev/zero", str(tmp_path / "a.pcap"),
                                 str(good), "-o", str(tmp_path / "f.parquet")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    for needle in ("is a FIFO", "is a character device", "symbolic link loop"):
        assert needle in r.output
    import polars as pl

    assert set(pl.read_parquet(tmp_path / "f.parquet")["source"]) == {str(good)}


def _without_dac(cmd: list[str]) -> list[str] | None:
    """``cmd`` run so that file permissions bind: as is for a normal user; as root without
    CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv); None when neither is possible."""
    import os
    import shutil

    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search", *cmd]


def test_unreadable_file_is_listed_and_the_batch_goes_on(tmp_path):
    """A mode-000 file stopped the whole batch with a usage error (exit 2)."""
    import os
    import subprocess
    import sys

    locked = small_pcap(tmp_path / "locked.pcap")
    good = small_pcap(tmp_path / "good.pcap")
    folder = tmp_path / "site"
    (folder / "closed").mkdir(parents=True)
    small_pcap(folder / "open.pcap")
    small_pcap(folder / "closed" / "hidden.pcap")
    os.chmod(locked, 0)
    os.chmod(folder / "closed", 0)
    try:
        probe = _without_dac([sys.executable, "-c", f"open({str(locked)!r}, 'rb')"])
        if probe is None or subprocess.run(probe, capture_output=True).returncode == 0:
            pytest.skip("cannot drop the right to read any file here (root without setpriv)")
        fw = Path(sys.executable).parent / "flockwatch"
        cmd = _without_dac([str(fw), "extract", str(locked), str(good), str(folder), "-q",
                            "-o", str(tmp_path / "f.parquet")])
        assert cmd is not None
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(locked, 0o644)
        os.chmod(folder / "closed", 0o755)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "Usage" not in r.stderr
    assert _has_line(r.stderr, locked, "permission denied")
    assert _has_line(r.stderr, folder / "closed", "folder not searched: Permission denied")
    import polars as pl

    assert set(pl.read_parquet(tmp_path / "f.parquet")["source"]) == {
        str(good), str(folder / "open.pcap")}


@pytest.mark.parametrize("command", ["extract", "inventory"])
def test_hook_hostile_captures(tmp_path, command):
    """The before-stop hook's three captures: a stated warning with exit 0, or an error that
    names the input with exit 1; never a traceback."""
    from fuzz.hostile import CAPTURE_CORPUS

    for name, want in (("hook truncated", 0), ("hook ts_jump", 0), ("hook random", 1)):
        p = tmp_path / f"{name.split()[1]}.pcap"
        p.write_bytes(CAPTURE_CORPUS[name]().data)
        r = CliRunner().invoke(app, [command, str(p)] + (
            ["-o", str(tmp_path / "f.parquet")] if command == "extract" else []))
        assert r.exit_code == want, (name, r.output)
        assert "Traceback" not in r.output and str(p) in r.output
        assert ("warning:" if want == 0 else "error:") in r.output


def test_byte_swapped_pcap_keeps_times_after_2038(tmp_path):
    """libpcap reads the seconds of a byte-swapped pcap unsigned (2076 stays 2076) and those
    of a native one signed (past 2038 they wrap): only the latter are repaired."""
    frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02",
                     ipv4("192.168.0.2", "192.168.0.3", 17,
                          udp("192.168.0.2", "192.168.0.3", 5000, 53, b"x" * 20)))
    for order, repaired in ((">", False), ("<", True)):
        p = tmp_path / f"late{order == '>'}.pcap"
        p.write_bytes(struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + b"".join(
            struct.pack(order + "IIII", 3_370_564_299 + i, 0, len(frame), len(frame)) + frame
            for i in range(3)))
        flows, problems = read_capture(p)
        assert flows["packets"].sum() == 3
        assert bool(problems) is repaired
        if not repaired:
            assert flows["first_seen"][0].year == 2076


def test_capture_without_a_capture_name_is_read_as_one(tmp_path):
    """A pcap named like a log, whose first bytes hold tabs, is still no Zeek log."""
    p = small_pcap(tmp_path / "x.pcap")
    odd = tmp_path / "dump"
    data = bytearray(p.read_bytes())
    data[8:12] = b"\t\t\t\t"  # timezone and sigfigs: nothing reads them
    odd.write_bytes(bytes(data))
    flows, problems = read_source_file(str(odd))
    assert problems == [] and flows["packets"].sum() == 3


def test_pass_in_a_process_reads_as_the_thread_does(site, bad, monkeypatch):
    """Large captures have their walk and payload pass run in a process of their own (off
    the interpreter lock that NFStream's flow reading needs): the same flows, payload,
    announcements and industrial columns, the same warnings, and a bad file's one-line
    error, as from the thread."""
    import polars as pl

    from flockwatch.features import flows as fl

    paths = [site / "learning.pcap", bad["truncated"], bad["text"], bad["empty"]]

    def read_all():
        out = []
        for p in paths:
            try:
                flows, problems = read_capture(p)
                out.append((flows.sort("first_seen", "src_ip", "src_port", "dst_port"),
                            [str(x) for x in problems]))
            except InputError as exc:
                out.append(str(exc))
        return out

    threaded = read_all()
    monkeypatch.setattr(fl, "PASS_PROCESS_BYTES", 0)
    submitted = []
    real = fl._pass_in_process
    monkeypatch.setattr(fl, "_pass_in_process",
                        lambda *a: submitted.append(real(*a)) or submitted[-1])
    processed = read_all()
    assert len(submitted) == 2 and all(f is not None for f in submitted)  # pcap, truncated
    for a, b in zip(threaded, processed, strict=True):
        if isinstance(a, str):
            assert a == b
        else:
            assert a[1] == b[1]
            assert a[0].equals(b[0])
    assert threaded[0][0]["payload"].is_not_null().any()
    assert threaded[0][0].filter(pl.col("ot_protocol").is_not_null()).height > 0
    # a pass process that dies (killed, out of memory): the pass runs in the reader instead
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    def broken(*_a):
        f: Future = Future()
        f.set_exception(BrokenProcessPool("a worker died"))
        return f

    monkeypatch.setattr(fl, "_pass_in_process", broken)
    again = read_all()
    for a, b in zip(threaded[:2], again[:2], strict=True):
        assert a[1] == b[1] and a[0].equals(b[0])
    assert again[2:] == threaded[2:]

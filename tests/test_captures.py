"""Bad input: one line naming the input and the problem, no traceback, non-zero exit."""

import gzip
import struct
from pathlib import Path

import pytest
from flockwatch.datasets.pcap import PcapWriter, ethernet, ipv4, udp
from flockwatch.features import InputError, read_capture
from flockwatch.features.captures import inspect_capture
from flockwatch.serving.cli import app
from typer.testing import CliRunner


def small_pcap(path: Path, linktype: int = 1) -> Path:
    w = PcapWriter(linktype=linktype)
    for i in range(3):
        frame = ethernet("02:00:00:00:00:01", "02:00:00:00:00:02",
                         ipv4("192.168.0.2", "192.168.0.3", 17,
                              udp("192.168.0.2", "192.168.0.3", 5000, 53, b"x" * 20)))
        w.add(1_700_000_000 + i, frame)
    w.write(path)
    return path


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

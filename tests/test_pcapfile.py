"""The one pcap writer: what it writes, the reader and libpcap's framing read back."""

from __future__ import annotations

import io
from pathlib import Path

from flockwatch.datasets.pcap import PcapWriter, ethernet, ipv4, read_pcap, udp
from flockwatch.features.captures import inspect_capture
from flockwatch.features.pcapfile import PcapStream, pcap_header, record_header, split_time


def _frame(i: int) -> bytes:
    a, b = "10.0.0.1", "10.0.0.2"
    return ethernet("02:00:00:00:00:01", "02:00:00:00:00:02",
                    ipv4(a, b, 17, udp(a, b, 1000 + i, 53, b"x" * i)))


def test_time_rounds_to_the_microsecond_and_carries() -> None:
    assert split_time(10.25) == (10, 250000)
    assert split_time(10.0000004) == (10, 0)
    assert split_time(10.9999996) == (11, 0)  # rounds up into the next second, never 1e6 us


def test_headers_are_libpcap_classic() -> None:
    assert pcap_header() == bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000")
    assert pcap_header(byte_order=">")[:4] == bytes.fromhex("a1b2c3d4")
    assert record_header(1, 2, 3) == bytes.fromhex("01000000020000000300000003000000")
    assert record_header(1, 2, 3, 9, ">")[-4:] == bytes.fromhex("00000009")


def test_stream_round_trips_through_the_reader_and_the_inspector(tmp_path: Path) -> None:
    times = [1_700_000_000.5 + i * 0.001 for i in range(5000)]  # past one flush of 4096 chunks
    path = tmp_path / "s.pcap"
    with path.open("wb") as fh, PcapStream(fh) as out:
        for i, t in enumerate(times):
            out.write(t, _frame(i % 50))
    assert out.packets == len(times)
    linktype, packets = read_pcap(path)
    assert linktype == 1
    assert [round(t, 6) for t, _ in packets] == [round(t, 6) for t in times]
    assert [f for _, f in packets] == [_frame(i % 50) for i in range(len(times))]
    info = inspect_capture(path)
    assert (info.format, info.packets, info.truncated_at, info.needs_repair) == \
        ("pcap", len(times), None, False)


def test_writer_sorts_by_time_and_writes_the_same_bytes_as_the_stream(tmp_path: Path) -> None:
    w = PcapWriter()
    for i in (3, 1, 2):
        w.add(100.0 + i, _frame(i))
    assert w.write(tmp_path / "w.pcap") == 3
    buf = io.BytesIO()
    with PcapStream(buf) as out:
        for i in (1, 2, 3):
            out.write(100.0 + i, _frame(i))
    assert (tmp_path / "w.pcap").read_bytes() == buf.getvalue()

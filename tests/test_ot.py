"""Industrial protocols at function level (features/ot.py): the dissectors on the shared
captures (exact counts, identities), MBAP framing across and within segments, malformed
payloads, the per-second timeline, the window features of a capture the tests write, and the
refusal of a model of the previous feature set."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flockwatch.datasets.pcap import (
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    PcapWriter,
    ethernet,
    ipv4,
    tcp,
)
from flockwatch.features import WindowSpec, read_capture, windows
from flockwatch.features.attribution import attribute
from flockwatch.features.explain import describe, feature_label, feature_range
from flockwatch.features.ot import (
    OT_COLUMNS,
    OT_DISSECTORS,
    OT_FEATURES,
    BACnetDissector,
    DNP3Dissector,
    ENIPDissector,
    IEC104Dissector,
    ModbusDissector,
    S7Dissector,
)
from flockwatch.features.payload import scan_capture
from flockwatch.features.windows import (
    FEATURE_COLUMNS,
    FEATURE_SET_VERSION,
    KEY_COLUMNS,
    add_industrial,
    assign_windows,
    window_features,
)

T0 = 1_772_438_400.0
MASTER = ("02:00:00:00:00:0a", "192.168.1.10")
PLC = ("02:00:00:00:00:0b", "192.168.1.20")


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def read_holding(tid: int, addr: int = 0, count: int = 10, unit: int = 1) -> bytes:
    return mbap(tid, unit, struct.pack("!BHH", 3, addr, count))


def write_multiple(tid: int, addr: int, values: list[int], unit: int = 1) -> bytes:
    data = b"".join(struct.pack("!H", v) for v in values)
    return mbap(tid, unit, struct.pack("!BHHB", 16, addr, len(values), len(data)) + data)


def device_id_response(tid: int) -> bytes:
    objs = [(0, b"Schneider Electric"), (1, b"BMX P34 2020"), (2, b"v2.70"),
            (4, b"Modicon M340")]
    body = bytes([43, 14, 1, 0x01, 0, 0, len(objs)])
    body += b"".join(bytes([i, len(v)]) + v for i, v in objs)
    return mbap(tid, 1, body)


# --- dissectors fed directly ------------------------------------------------------------------


def test_modbus_coalesced_split_exceptions_identity():
    d = ModbusDissector()
    two = read_holding(1, 0) + write_multiple(2, 100, [1, 2, 3])
    d.packet(1000, two, True)  # two ADUs in one segment
    split = read_holding(3, 40, unit=2)
    d.packet(1100, split[:3], True)  # one ADU over three segments
    d.packet(1200, split[3:9], True)
    d.packet(1300, split[9:], True)
    d.packet(1400, mbap(1, 1, bytes([0x83, 0x02])), False)  # exception: illegal address
    d.packet(2500, device_id_response(4), False)
    d.packet(2600, mbap(5, 1, bytes([43, 14, 1, 0])), True)  # the request, read device id
    d.packet(2700, mbap(6, 1, bytes([8, 0, 1, 0, 0])), True)  # restart communications
    cols = d.columns()
    assert cols["ot_protocol"] == "modbus"
    assert (cols["ot_requests"], cols["ot_reads"], cols["ot_writes"], cols["ot_program"],
            cols["ot_diagnostics"], cols["ot_exceptions"]) == (5, 2, 1, 1, 1, 1)
    assert cols["ot_functions"] == "3:2,8:1,16:1,43:1"
    assert cols["ot_units"] == "1,2"
    assert cols["ot_objects"] == 3  # 1/h0, 1/h100, 2/h40
    assert cols["ot_timeline"].split("\n") == [
        "1 3 2 1 0 0 1 -1 3:2,16:1 1,2 1/h0,1/h100,2/h40",
        "2 2 0 0 1 1 0 -1 8:1,43:1 1 -",
    ]
    assert list(d.entries()) == [
        (True, "modbus_identity=Schneider Electric;Modicon M340;v2.70")]


def test_modbus_polling_period_within_a_connection():
    d = ModbusDissector()
    for i in range(5):
        d.packet(10_000 + i * 2_000 + (i % 2) * 10, read_holding(i), True)
    lines = d.columns()["ot_timeline"].split("\n")
    assert [ln.split(" ")[7] for ln in lines] == ["-1", "2010", "1990", "2010", "1990"]


def test_other_traffic_on_a_registered_port_leaves_nulls():
    d = ModbusDissector()
    d.packet(0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True)
    assert d.columns() == dict.fromkeys(OT_COLUMNS)
    assert list(d.entries()) == []


def test_buffer_is_bounded_and_resyncs():
    d = DNP3Dissector()
    for _ in range(100):
        d.packet(0, b"\x00" * 1000, True)
    assert len(d._buf[True]) <= 16 * 1024
    m = ModbusDissector()
    m.packet(0, read_holding(1)[:7], True)  # a header whose body never comes...
    assert len(m._buf[True]) == 7
    m.packet(0, b"\xff" * 400, True)  # ...then garbage: dropped, not kept growing
    assert len(m._buf[True]) < 300


def dnp3_frame(fc: int, *, dest: int = 10, src: int = 1, obj: bytes = b"\x3c\x01\x06",
               response: bool = False, iin: bytes = b"\x00\x00") -> bytes:
    """A one-fragment DNP3 link frame (CRCs not checked by the dissector: zeros)."""
    app = bytes([0xC0, fc]) + (iin if response else b"") + obj
    user = bytes([0xC0]) + app  # transport: FIR | FIN
    head = b"\x05\x64" + bytes([5 + len(user), 0xC4]) + struct.pack("<HH", dest, src) + b"\0\0"
    blocks = b"".join(user[i:i + 16] + b"\0\0" for i in range(0, len(user), 16))
    return head + blocks


def test_dnp3_operate_restart_and_iin_exception():
    d = DNP3Dissector()
    d.packet(0, dnp3_frame(1) + dnp3_frame(5, obj=b"\x0c\x01\x28"), True)  # coalesced
    d.packet(10, dnp3_frame(13), True)
    d.packet(20, dnp3_frame(129, response=True, iin=b"\x00\x01"), False)  # no func support
    cols = d.columns()
    assert (cols["ot_reads"], cols["ot_writes"], cols["ot_program"],
            cols["ot_exceptions"]) == (1, 1, 1, 1)
    assert cols["ot_functions"] == "1:1,5:1,13:1"
    assert cols["ot_units"] == "10"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.booleans()), max_size=8))
def test_malformed_payloads_never_raise(packets):
    for factory in set(OT_DISSECTORS.values()):
        d = factory()
        for data, to_server in packets:
            d.packet(0, data, to_server)
        d.columns()
        list(d.entries())


# --- golden counts on the shared captures -------------------------------------------------------


def segments(path: Path) -> pl.DataFrame:
    return scan_capture(path, announcements=False).segments.filter(
        pl.col("ot_protocol").is_not_null())


def totals(seg: pl.DataFrame) -> dict[str, int]:
    cols = ["ot_requests", "ot_reads", "ot_writes", "ot_program", "ot_diagnostics",
            "ot_exceptions"]
    return {c.removeprefix("ot_"): int(seg[c].sum()) for c in cols}


def functions(seg: pl.DataFrame) -> dict[str, int]:
    out: dict[str, int] = {}
    for text in seg["ot_functions"].drop_nulls().to_list():
        for item in text.split(","):
            code, n = item.rsplit(":", 1)
            out[code] = out.get(code, 0) + int(n)
    return out


def identities(seg: pl.DataFrame) -> set[str]:
    """The entries of either end (a list, or one entry a line)."""
    out: set[str] = set()
    for col in ("client_entries", "server_entries"):
        for value in seg[col].to_list():
            out |= set(value.split("\n") if isinstance(value, str) else value or ())
    return out


GOLDEN = [
    # (folder/file, protocol, totals, functions, identities)
    ("ics-protocols/modbus/iti__bro_modbus_modbusSmall.pcap", "modbus",
     dict(requests=16, reads=8, writes=8, program=0, diagnostics=0, exceptions=0),
     {"1": 8, "15": 8}, set()),
    ("ics-protocols/modbus/iti__ModbusTCP_modbus_test_data_part1.pcap", "modbus",
     dict(requests=18, reads=3, writes=3, program=6, diagnostics=6, exceptions=14),
     {"1": 2, "3": 1, "5": 2, "6": 1, "8": 8, "17": 2, "43": 2}, set()),
    ("modbus-scada/characterization_modbus_6RTU_with_operate.pcap", "modbus",
     dict(requests=3960, reads=3957, writes=3, program=0, diagnostics=0, exceptions=3329),
     {"1": 210, "2": 214, "3": 218, "4": 3315, "5": 3}, set()),
    ("ics-protocols/dnp3/iti__dnp3_cold_restart_and_response.pcap", "dnp3",
     dict(requests=1, reads=0, writes=0, program=1, diagnostics=0, exceptions=1),
     {"13": 1}, set()),
    ("ics-protocols/dnp3/iti__bro_dnp3_dnp3_select_operate.pcap", "dnp3",
     dict(requests=2, reads=0, writes=2, program=0, diagnostics=0, exceptions=0),
     {"3": 1, "4": 1}, set()),
    ("ics-protocols/s7comm/iti__s7_snap7_s300_stop.pcapng", "s7comm",
     dict(requests=1, reads=0, writes=0, program=1, diagnostics=0, exceptions=0),
     {"41": 1}, set()),
    ("ics-protocols/s7comm/iti__s7_snap7_s300_everything.pcapng", "s7comm",
     dict(requests=32, reads=2, writes=2, program=17, diagnostics=10, exceptions=2),
     {"4": 2, "5": 2, "29": 5, "30": 4, "31": 4, "40": 3, "41": 1, "240": 1, "ud4.1": 6,
      "ud3.1": 1, "ud3.3": 1, "ud7.1": 1, "ud7.2": 1},
     {"s7_identity=Siemens;CPU 315-2 PN/DP (6ES7 315-2EH14-0AB0);3.2.7"}),
    ("ics-protocols/enip_cip/iti__EthernetIP_enip_test.pcap", "enip",
     dict(requests=1, reads=0, writes=0, program=0, diagnostics=1, exceptions=0),
     {"enc99": 1}, {"enip_identity=Rockwell Automation/Allen-Bradley;1756-ENBT/A;4.003"}),
    ("ics-protocols/enip_cip/iti__EthernetIP_cip_stop_plc.pcap", "enip",
     dict(requests=1, reads=0, writes=0, program=1, diagnostics=0, exceptions=0),
     {"7": 1}, set()),
    ("ics-protocols/iec104/emreekin__IEC60870-104_iec104.pcap", "iec104",
     dict(requests=16, reads=2, writes=14, program=0, diagnostics=0, exceptions=0),
     {"45": 2, "46": 2, "47": 2, "48": 2, "49": 2, "50": 2, "51": 2, "100": 2}, set()),
    ("ics-protocols/bacnet/iti__BACnet_bacnet_test.pcap", "bacnet",
     dict(requests=9, reads=9, writes=0, program=0, diagnostics=0, exceptions=0),
     {"12": 9}, {"bacnet_identity=JCI;MS-NAE4510-2;5.1.0.4400"}),
    ("ics-protocols/bacnet/ndpi__bacnet.pcap", "bacnet",
     dict(requests=15, reads=9, writes=0, program=0, diagnostics=6, exceptions=1),
     {"12": 9, "264": 6}, {"bacnet_identity=vendor-id 260;;"}),
]


@pytest.mark.parametrize("name,protocol,want,fns,ids", GOLDEN,
                         ids=[g[0].rsplit("/", 1)[1] for g in GOLDEN])
def test_golden_shared_captures(shared_data, name, protocol, want, fns, ids):
    seg = segments(shared_data / name)
    assert set(seg["ot_protocol"].to_list()) == {protocol}
    assert totals(seg) == want
    assert functions(seg) == fns
    assert identities(seg) == ids


def test_modbus_scada_attacker_scan(shared_data):
    """The characterization capture's attacker (192.168.1.101) reads 3315 input registers of
    another RTU, 3314 answered with an exception; the master polls and writes coils."""
    seg = segments(shared_data / "modbus-scada/characterization_modbus_6RTU_with_operate.pcap")
    scan = seg.filter((pl.col("client_ip") == "192.168.1.101")
                      & (pl.col("ot_functions") == "4:3315"))
    assert scan.height == 1
    assert scan.row(0, named=True)["ot_exceptions"] == 3314
    assert scan.row(0, named=True)["ot_objects"] == 256  # the per-flow cap
    writers = seg.filter(pl.col("ot_writes") > 0)["client_ip"].unique().to_list()
    assert writers == ["192.168.1.100"]


# --- a capture the test writes: flows, timeline, windows --------------------------------------


class Connection:
    def __init__(self, w: PcapWriter, t: float, cport: int = 40000) -> None:
        self.w, self.t, self.cport = w, t, cport
        self.seq = {True: 1000, False: 5000}
        self._send(True, TCP_SYN, b"", 0.0)
        self._send(False, TCP_SYN | TCP_ACK, b"", 0.001)
        self._send(True, TCP_ACK, b"", 0.001)

    def _send(self, to_plc: bool, flags: int, data: bytes, dt_s: float) -> None:
        a, b = (MASTER, PLC) if to_plc else (PLC, MASTER)
        sp, dp = (self.cport, 502) if to_plc else (502, self.cport)
        self.t += dt_s
        seg = tcp(a[1], b[1], sp, dp, self.seq[to_plc], self.seq[not to_plc], flags, data)
        self.w.add(self.t, ethernet(a[0], b[0], ipv4(a[1], b[1], 6, seg)))
        self.seq[to_plc] += len(data) + (1 if flags & TCP_SYN else 0)

    def exchange(self, at: float, request: bytes, response: bytes) -> None:
        self._send(True, TCP_PSH | TCP_ACK, request, at - self.t)
        self._send(False, TCP_PSH | TCP_ACK, response, 0.005)


@pytest.fixture
def polled(tmp_path: Path) -> Path:
    """One Modbus connection for 31 s: reads of 10 registers every second; at 24 s and 26 s
    a write of 3 registers, the second answered with an exception; a last read at 31.5 s."""
    path = tmp_path / "polled.pcap"
    w = PcapWriter()
    c = Connection(w, T0)
    for i in range(30):
        t = T0 + 0.5 + i
        c.exchange(t, read_holding(i), mbap(i, 1, bytes([3, 20]) + bytes(20)))
        if i in (24, 26):
            resp = (mbap(100 + i, 1, bytes([16, 0, 100, 0, 3])) if i == 24
                    else mbap(100 + i, 1, bytes([0x90, 0x02])))
            c.exchange(t + 0.2, write_multiple(100 + i, 100, [7, 8, 9]), resp)
    c.exchange(T0 + 31.5, read_holding(99), mbap(99, 1, bytes([3, 20]) + bytes(20)))
    w.write(path)
    return path


def test_flow_columns_and_window_features(polled):
    flows, _ = read_capture(polled)
    ot = flows.filter(pl.col("ot_protocol").is_not_null())
    assert ot.height == 1
    row = ot.row(0, named=True)
    assert (row["ot_requests"], row["ot_reads"], row["ot_writes"], row["ot_exceptions"],
            row["ot_functions"], row["ot_units"], row["ot_objects"]) == (
        33, 31, 2, 1, "3:31,16:2", "1", 2)
    assert len(row["ot_timeline"].split("\n")) == 31
    win = windows(flows, WindowSpec(10.0))
    plc = win.filter(pl.col("ip") == PLC[1]).sort("start")
    # the connection started in the first window; its requests count in the three it was
    # open for whole; the fourth, cut short by the capture's end, is no window of its own
    assert plc["flows"].to_list() == [1, 0, 0]
    assert plc["packets"].to_list()[1:] == [0, 0]
    req = plc["log_ot_requests"].exp().round(6) - 1
    assert req.to_list() == [10, 10, 12]
    assert plc["modbus_write_share"].to_list() == [0.0, 0.0, pytest.approx(2 / 12)]
    assert plc["modbus_fc_16_share"].to_list() == [0.0, 0.0, pytest.approx(2 / 12)]
    assert plc["ot_exception_share"].to_list() == [0.0, 0.0, pytest.approx(1 / 12)]
    assert plc["ot_read_share"].to_list()[:2] == [1.0, 1.0]
    # polling period: reads every 1 s, the writes 2 s apart
    period = (plc["log_ot_poll_period"].exp() - 1).to_list()
    assert period[0] == pytest.approx(1.0, abs=0.01)
    assert period[1] == pytest.approx(1.0, abs=0.01)
    assert plc["log_ot_objects"].to_list() == pytest.approx([math.log1p(1)] * 2
                                                            + [math.log1p(2)])
    master = win.filter(pl.col("ip") == MASTER[1]).sort("start")
    assert master["modbus_write_share"].to_list() == plc["modbus_write_share"].to_list()
    # the same rows whether the industrial features come with the windows or are added
    # afterwards over all flows (what scoring in parts does)
    att = assign_windows(attribute(flows), WindowSpec(10.0))
    first = att.filter(pl.col("first_seen") < pl.lit(T0 + 10).cast(pl.Int64) * 1000)
    late = window_features(first, industrial=False)
    again = add_industrial(late, att)
    assert again.select(KEY_COLUMNS, *OT_FEATURES).equals(
        win.select(KEY_COLUMNS, *OT_FEATURES))


def test_windows_without_industrial_flows_are_unchanged(polled):
    """A capture without industrial flows gets the industrial features at 0 and no rows."""
    flows, _ = read_capture(polled)
    plain = flows.with_columns(pl.lit(None, dtype=dtype).alias(c)
                               for c, (dtype, _) in OT_COLUMNS.items())
    win = windows(plain, WindowSpec(10.0))
    assert win["flows"].min() > 0
    assert (win.select(OT_FEATURES).sum_horizontal() == 0).all()


def test_explanations_name_the_industrial_features():
    assert describe("modbus_write_share", 0.12, 0.0) == "Modbus write share: 12% (expected 0%)"
    assert describe("log_ot_poll_period", 2.397895, 0.0) == (
        "polling period: 10 s (expected 0 s)")
    assert feature_label("dnp3_write_share") == "DNP3 write share"
    assert feature_range("ot_exception_share") == (0.0, 1.0)
    for f in OT_FEATURES:
        assert f in FEATURE_COLUMNS
        assert feature_label(f) != f


def test_model_of_feature_set_4_is_refused():
    from flockwatch.models.bundle import Bundle, check_feature_set

    assert FEATURE_SET_VERSION == 5
    bundle = Bundle(window=WindowSpec(300))
    bundle.info["feature_set_version"] = 4
    with pytest.raises(ValueError, match="trained on feature set v4; this flockwatch computes "
                                         "v5: retrain it"):
        check_feature_set(bundle)


def test_synthetic_modbus_write_attack_is_seen(site):
    """The synthetic site's Modbus-writes attack carries real write requests (function 16)
    from the workstation, which never writes while the site is learnt."""
    learn, _ = read_capture(site / "learning.pcap")
    attacks, _ = read_capture(site / "attacks.pcap")
    assert learn["ot_writes"].fill_null(0).sum() == 0
    writes = attacks.filter(pl.col("ot_writes") > 0)
    assert writes.height > 0
    assert set(writes["ot_functions"].to_list()) == {"16:1"}
    assert learn.filter(pl.col("ot_protocol") == "modbus")["ot_reads"].sum() > 0
    s7 = learn.filter(pl.col("ot_protocol") == "s7comm")
    assert s7["ot_reads"].sum() > 0 and s7["ot_exceptions"].sum() == 0


def test_every_dissector_is_registered():
    assert {type(f()) for f in OT_DISSECTORS.values()} == {
        ModbusDissector, DNP3Dissector, S7Dissector, ENIPDissector, IEC104Dissector,
        BACnetDissector}


# --- the two paths of the industrial window features ------------------------------------------


def same_industrial_features(att: pl.DataFrame) -> int:
    """``ot_window_features`` in plain Python (a REST request's few flows) and in polars
    queries (a capture) give the same table; returns its rows."""
    import numpy as np

    from flockwatch.features.ot import ot_window_features

    small = ot_window_features(att, KEY_COLUMNS, small=True)
    frame = ot_window_features(att, KEY_COLUMNS, small=False)
    assert small.height == frame.height
    if not small.height:
        return 0
    assert small.schema == frame.schema
    small, frame = small.sort(KEY_COLUMNS), frame.sort(KEY_COLUMNS)
    ident = [*KEY_COLUMNS, "mac", "ip", "covered"]
    assert small.select(ident).equals(frame.select(ident))
    np.testing.assert_allclose(small.select(OT_FEATURES).to_numpy(),
                               frame.select(OT_FEATURES).to_numpy(), rtol=1e-12, atol=1e-15)
    return small.height


def test_industrial_feature_paths_agree_on_captures(polled, site, shared_data):
    """The written polling capture, the synthetic site (Modbus and S7comm, with its write
    attack) and the Modbus SCADA captures (many masters, exceptions, scans)."""
    paths = [polled, site / "learning.pcap", site / "attacks.pcap",
             *sorted((shared_data / "modbus-scada").glob("*.pcap"))[:4]]
    for spec in (WindowSpec(10.0), WindowSpec(300)):
        rows = 0
        for path in paths:
            flows, _ = read_capture(path)
            rows += same_industrial_features(assign_windows(attribute(flows), spec))
        assert rows > 10


_FIELD = st.sampled_from(["0", "1", "2", "3", "7", "-1", "+2", "", "x", "2003", "1990"])
_LIST = st.sampled_from(["-", "3:1", "3:2,16:1", "16:1", "43:1,8:2", "3", ":", "a:b", "3:1:5",
                         "x:2", "1", "1,2", "", "1/h0", "1/h0,2/h40", "7/c3"])


@st.composite
def timeline_flows(draw: st.DrawFn) -> pl.DataFrame:
    """Flows with any timeline, malformed lines and fields included, seconds that tie across
    flows of one polled series, and seconds outside the flow (clamped to it)."""
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        first = int(T0 * 1000) + draw(st.integers(0, 40_000))
        last = first + draw(st.integers(0, 40_000))
        if draw(st.booleans()):  # ends exactly on a window's end
            last = max(first, (last // 10_000 + 1) * 10_000)
        lines = []
        for _ in range(draw(st.integers(1, 8))):
            t = str(int(T0) + draw(st.integers(-5, 90)))
            fields = [t, *(draw(_FIELD) for _ in range(7)), draw(_LIST), draw(_LIST),
                      draw(_LIST)]
            lines.append(" ".join(fields[:draw(st.integers(1, 11))] if draw(st.booleans())
                                  and draw(st.booleans()) else fields))
        start = first // 10_000 * 10_000
        rows.append({
            "source": "s", "device_id": draw(st.sampled_from(["plc", "hmi"])),
            "start": start, "end": start + 10_000, "first_seen": first, "last_seen": last,
            "ot_timeline": "\n".join(lines),
            "ot_protocol": draw(st.sampled_from(["modbus", "modbus", "s7comm", "dnp3", None])),
            "peer_ip": draw(st.sampled_from(["10.0.0.1", "10.0.0.2", None])),
            "dst_port": draw(st.sampled_from([502, 102])),
            "mac": draw(st.sampled_from(["02:00:00:00:00:01", None])),
            "ip": draw(st.sampled_from(["10.0.0.9", "10.0.0.10", None])),
        })
    ms = pl.Datetime("ms", "UTC")
    return pl.DataFrame(rows, schema={
        "source": pl.String, "device_id": pl.String, "start": ms, "end": ms,
        "first_seen": ms, "last_seen": ms, "ot_timeline": pl.String, "ot_protocol": pl.String,
        "peer_ip": pl.String, "dst_port": pl.Int32, "mac": pl.String, "ip": pl.String})


@settings(max_examples=300, deadline=None)
@given(timeline_flows())
def test_industrial_feature_paths_agree_on_any_timeline(att):
    same_industrial_features(att)

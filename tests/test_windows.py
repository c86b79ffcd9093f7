"""Windowing invariants (Hypothesis) and attribution rules."""

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flockwatch.features import FEATURE_COLUMNS, WindowSpec, attribute, conform, windows

MACS = ["00:bc:99:00:00:01", "00:0a:eb:00:00:02", "00:00:54:00:00:03"]
IPS = ["192.168.1.1", "192.168.1.2", "192.168.1.3"]
REMOTE = ["8.8.8.8", "93.184.216.34"]
GW_MAC = "00:09:5b:00:00:09"

flow_st = st.fixed_dictionaries({
    "i": st.integers(0, 2), "peer": st.integers(0, 4), "t": st.integers(0, 3_600_000),
    "dur": st.integers(0, 60_000), "po": st.integers(1, 50), "pi": st.integers(0, 50),
    "bo": st.integers(60, 50_000), "bi": st.integers(0, 50_000), "proto": st.sampled_from([6, 17]),
    "port": st.sampled_from([53, 443, 502, 8883]),
})


def make_flows(specs):
    rows = []
    for s in specs:
        me, peer = s["i"], s["peer"]
        if peer < 3:
            dst_mac, dst_ip = MACS[peer], IPS[peer]
        else:
            dst_mac, dst_ip = GW_MAC, REMOTE[peer - 3]
        t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=s["t"])
        rows.append({
            "source": "cap", "first_seen": t, "last_seen": t + dt.timedelta(milliseconds=s["dur"]),
            "src_mac": MACS[me], "dst_mac": dst_mac, "src_ip": IPS[me], "dst_ip": dst_ip,
            "src_port": 40000, "dst_port": s["port"], "protocol": s["proto"], "ip_version": 4,
            "packets": s["po"] + s["pi"], "bytes": s["bo"] + s["bi"],
            "src2dst_packets": s["po"], "dst2src_packets": s["pi"],
            "src2dst_bytes": s["bo"], "dst2src_bytes": s["bi"], "application": "TLS",
            "syn_packets": 1, "ack_packets": 1, "psh_packets": 0, "rst_packets": 0,
            "fin_packets": 0,
        })
    return conform(pl.DataFrame(rows))


@settings(max_examples=40, deadline=None)
@given(st.lists(flow_st, min_size=1, max_size=40), st.sampled_from([30.0, 300.0, 3600.0]),
       st.randoms(use_true_random=False))
def test_windows_conserve_and_ignore_row_order(specs, length, rnd):
    flows = make_flows(specs)
    spec = WindowSpec(length)
    w = windows(flows, spec)
    att = attribute(flows)
    # Packets and bytes are conserved per device across its windows.
    per_dev = att.group_by("device_id").agg(pl.col("packets").sum(), pl.col("bytes").sum())
    per_win = w.group_by("device_id").agg(pl.col("packets").sum(), pl.col("bytes").sum())
    assert per_dev.sort("device_id").equals(per_win.sort("device_id"))
    assert int(w["flows"].sum()) == att.height
    # Row order does not matter.
    order = list(range(flows.height))
    rnd.shuffle(order)
    w2 = windows(flows[order], spec)
    assert w2.drop(FEATURE_COLUMNS).equals(w.drop(FEATURE_COLUMNS))
    diff = (w2.select(FEATURE_COLUMNS).to_numpy() - w.select(FEATURE_COLUMNS).to_numpy())
    assert abs(diff).max() < 1e-9
    # No identity leaks into the features.
    assert not any("mac" in c or c.endswith("_ip") for c in FEATURE_COLUMNS)


def test_short_capture_is_one_window():
    flows = make_flows([{"i": 0, "peer": 1, "t": t, "dur": 10, "po": 1, "pi": 1, "bo": 100,
                         "bi": 100, "proto": 17, "port": 53} for t in (0, 20_000, 70_000)])
    w = windows(flows, WindowSpec(300))
    assert w.filter(pl.col("device_id") == MACS[0]).height == 1


def test_attribution_rules():
    flows = make_flows([
        {"i": 0, "peer": 3, "t": 0, "dur": 1, "po": 1, "pi": 1, "bo": 100, "bi": 100,
         "proto": 6, "port": 443},  # device -> remote through gateway
        {"i": 0, "peer": 1, "t": 1, "dur": 1, "po": 1, "pi": 1, "bo": 100, "bi": 100,
         "proto": 6, "port": 502},  # local <-> local
    ])
    att = attribute(flows)
    # The remote endpoint (gateway MAC) is never a device; local peers are credited both ways.
    assert GW_MAC not in att["device_id"].to_list()
    assert att.filter(pl.col("flow_index") == 0)["device_id"].to_list() == [MACS[0]]
    both = att.filter(pl.col("flow_index") == 1).sort("direction")
    assert both["device_id"].to_list() == [MACS[1], MACS[0]]
    assert both["direction"].to_list() == ["in", "out"]
    assert both.filter(pl.col("direction") == "in")["bytes_out"].item() == 100
    # Broadcast and multicast are not devices.
    bc = flows.head(1).with_columns(pl.lit("ff:ff:ff:ff:ff:ff").alias("dst_mac"),
                                    pl.lit("255.255.255.255").alias("dst_ip"))
    assert attribute(bc)["device_id"].to_list() == [MACS[0]]


def test_name_words_are_behaviour_not_identity():
    """Host names feed the features word by word, less the words that name a unit or an
    address: two units of one model whose DHCP/mDNS names differ only by MAC or serial, and
    that look up the same names, get the same name features; a different model does not."""
    import zlib

    from flockwatch.features.windows import N_NAME_BUCKETS

    base = [{"i": i, "peer": 3, "t": 1000 * k, "dur": 10, "po": 1, "pi": 1, "bo": 80, "bi": 90,
             "proto": 17, "port": 53} for i in range(3) for k in range(3)]
    names = [
        # unit 1 and unit 2 of one camera model, and another model
        ["dcs-935l-b0c554255b0e.local", "keq0817541", "mydlink.com"],
        ["dcs-935l-b0c554fe0001.local", "keq0999123", "mydlink.com"],
        ["dcs-930lb1-1c7185.local", "239.255.255.250", "mydlink.com"],
    ]
    flows = make_flows(base).with_columns(pl.Series(
        "server_name", [names[s["i"]][k] for s, k in zip(base, [0, 1, 2] * 3, strict=True)]))
    w = windows(flows, WindowSpec(3600)).sort("device_id")
    cols = [c for c in FEATURE_COLUMNS if c.startswith("name_token_")]
    feats = {r["device_id"]: [r[c] for c in cols] for r in w.iter_rows(named=True)}
    unit1, unit2, other = (feats[m] for m in MACS)
    assert unit1 == unit2
    assert unit1 != other
    # The words kept for unit 1 ("local" and "com" are generic, the MAC and the serial
    # identity): dcs, 935l and mydlink, a third of the words each.
    expected = [0.0] * N_NAME_BUCKETS
    for word in ["dcs", "935l", "mydlink"]:
        expected[zlib.crc32(word.encode()) % N_NAME_BUCKETS] += 1 / 3
    assert unit1 == pytest.approx(expected, abs=1e-12)


def test_hashed_shares_in_python_and_polars_agree(site, monkeypatch):
    """A REST request's few flows and token rows are counted in plain Python, a capture's in
    polars: the same window table either way (name words, fingerprints, user agents,
    periodic series)."""
    import importlib

    from flockwatch.features import read_capture

    w = importlib.import_module("flockwatch.features.windows")
    flows = pl.concat([read_capture(site / "learning.pcap")[0].head(3000),
                       read_capture(site / "attacks.pcap")[0]])
    monkeypatch.setattr(w, "SMALL_TOKENS", 10 ** 9)
    small = windows(flows, WindowSpec(300))
    monkeypatch.setattr(w, "SMALL_TOKENS", -1)
    frame = windows(flows, WindowSpec(300))
    hashed = [c for c in FEATURE_COLUMNS if c.startswith(("name_token_", "fingerprint_"))]
    assert frame.select(hashed).sum().sum_horizontal().item() > 0
    assert small.equals(frame)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=40),
    st.sampled_from(["www.Example.COM", "b8-27-eb-12-34-56.local", "a1b2c3d4e5f6.cam.example",
                     "dev12345.iot", "İstanbul.ΣΟΦΊΑ.example", "x..y--z", "", " ", "123.45.6.7",
                     "in-addr.arpa", "AA:BB:CC:DD:EE:FF", "_hue._tcp.local"])), min_size=1,
    max_size=8))
def test_name_words_in_python_and_polars_agree(names):
    """A request's names are split in plain Python (``name_words``), a capture's in polars
    (``name_token_rows``): the same words, as many times each, for any text."""
    from flockwatch.features.windows import name_token_rows, name_words

    att = pl.DataFrame({"k": list(range(len(names))), "server_name": names})
    rows = name_token_rows(att, ["k"])
    want = {k: sorted(rows.filter(pl.col("k") == k)["tok"].to_list())
            for k in range(len(names))}
    assert {k: sorted(name_words(n)) for k, n in enumerate(names)} == want

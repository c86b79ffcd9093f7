"""Golden captures written by the test, with their expected flow table and inventory."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from flockwatch.datasets import synth
from flockwatch.datasets.pcap import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    PcapWriter,
    ethernet,
    ipv4,
    tcp,
    udp,
)
from flockwatch.features import FLOW_SCHEMA, extract, inventory

GW = ("00:09:5b:00:00:01", "192.168.0.1")
CAM = ("00:bc:99:00:00:10", "192.168.0.10")  # Hikvision OUI
PLUG = ("00:0a:eb:00:00:20", "192.168.0.20")  # TP-Link OUI
T0 = 1_772_438_400.0  # 2026-03-02 08:00:00 UTC


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    rng = np.random.default_rng(0)
    w = PcapWriter()
    sizes: dict[str, list[int]] = {"dns": [], "tls": [], "dhcp": []}

    def add(key, ts, smac, dmac, src, dst, l4, proto):
        frame = ethernet(smac, dmac, ipv4(src, dst, proto, l4))
        sizes[key].append(len(frame))
        w.add(ts, frame)

    # DNS: camera asks the gateway for iot.example.com.
    q, a = synth.dns_query(7, "iot.example.com"), synth.dns_response(7, "iot.example.com",
                                                                     "93.184.216.34")
    add("dns", T0, CAM[0], GW[0], CAM[1], GW[1], udp(CAM[1], GW[1], 50000, 53, q), 17)
    add("dns", T0 + 0.01, GW[0], CAM[0], GW[1], CAM[1], udp(GW[1], CAM[1], 53, 50000, a), 17)
    # TLS: camera -> 93.184.216.34:443 through the gateway, SNI iot.example.com.
    c, s = CAM[1], "93.184.216.34"
    hello, shello = synth.tls_client_hello("iot.example.com", rng), synth.tls_server_hello(rng)
    seq = [
        (c, s, CAM[0], GW[0], TCP_SYN, b"", 1000, 0),
        (s, c, GW[0], CAM[0], TCP_SYN | TCP_ACK, b"", 5000, 1001),
        (c, s, CAM[0], GW[0], TCP_ACK, b"", 1001, 5001),
        (c, s, CAM[0], GW[0], TCP_PSH | TCP_ACK, hello, 1001, 5001),
        (s, c, GW[0], CAM[0], TCP_PSH | TCP_ACK, shello, 5001, 1001 + len(hello)),
        (c, s, CAM[0], GW[0], TCP_FIN | TCP_ACK, b"", 1001 + len(hello), 5001 + len(shello)),
    ]
    for i, (src, dst, smac, dmac, flags, payload, sq, ack) in enumerate(seq):
        sp, dp = (51000, 443) if src == c else (443, 51000)
        add("tls", T0 + 1 + i * 0.01, smac, dmac, src, dst,
            tcp(src, dst, sp, dp, sq, ack, flags, payload), 6)
    # DHCP renewal: the plug names itself.
    req = synth.dhcp_request(99, PLUG[0], "plug-kitchen")
    add("dhcp", T0 + 2, PLUG[0], GW[0], PLUG[1], GW[1], udp(PLUG[1], GW[1], 68, 67, req), 17)
    path = tmp_path_factory.mktemp("golden") / "golden.pcap"
    w.write(path)
    return path, sizes


def test_golden_flow_table(golden):
    path, sizes = golden
    flows = extract([path]).flows
    assert flows.schema == FLOW_SCHEMA
    got = flows.sort("first_seen").select(
        "src_mac", "dst_mac", "src_ip", "dst_ip", "src_port", "dst_port", "protocol",
        "application", "server_name", "packets", "bytes", "src2dst_packets", "dst2src_packets",
        "syn_packets", "fin_packets",
    ).rows()
    assert got == [
        (CAM[0], GW[0], CAM[1], GW[1], 50000, 53, 17, "DNS", "iot.example.com", 2,
         sum(sizes["dns"]), 1, 1, 0, 0),
        (CAM[0], GW[0], CAM[1], "93.184.216.34", 51000, 443, 6, "TLS", "iot.example.com", 6,
         sum(sizes["tls"]), 4, 2, 2, 1),
        (PLUG[0], GW[0], PLUG[1], GW[1], 68, 67, 17, "DHCP", "plug-kitchen", 1,
         sum(sizes["dhcp"]), 1, 0, 0, 0),
    ]
    assert flows["first_seen"].min() == dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
    assert flows["source"].unique().to_list() == [str(path)]


def test_golden_inventory(golden):
    path, sizes = golden
    inv = inventory(extract([path]).flows)
    rows = {r["device_id"]: r for r in inv.iter_rows(named=True)}
    assert set(rows) == {CAM[0], PLUG[0]}  # the gateway only answers: not a device
    cam, plug = rows[CAM[0]], rows[PLUG[0]]
    assert cam["vendor"] == "Hangzhou Hikvision Digital Technology Co.,Ltd."
    assert cam["ips"] == [CAM[1]]
    assert cam["server_names"] == ["iot.example.com"]
    assert cam["hostnames"] == []
    assert cam["protocols"] == ["DNS", "TCP", "TLS", "UDP"]
    assert (cam["flows"], cam["packets"], cam["bytes"]) == (
        2, 8, sum(sizes["dns"]) + sum(sizes["tls"]))
    assert plug["vendor"] == "Tp-Link Technologies Co.,Ltd."
    assert plug["hostnames"] == ["plug-kitchen"]
    assert plug["industrial"] is False
    assert inv.filter(pl.col("device_id") == CAM[0])["first_seen"].item() == dt.datetime(
        2026, 3, 2, 8, 0, tzinfo=dt.UTC)

"""Flow direction as Zeek decides it (features/orient.py), new peers only from real
initiations, and the attribution slips found on the week-long captures: captures the tests
write, flow tables built by hand, and the shared week-long captures."""

import datetime as dt
import struct

import polars as pl
import pytest

from flockwatch.datasets import synth
from flockwatch.datasets.pcap import (
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    PcapWriter,
    ethernet,
    ipv4,
    tcp,
    udp,
)
from flockwatch.features import attribute, conform, inventory, read_capture
from flockwatch.features.windows import WindowSpec, assign_windows
from flockwatch.models.peers import PeerBaseline

GW = ("00:09:5b:00:00:01", "192.168.0.1")
CAM = ("00:bc:99:00:00:10", "192.168.0.10")
PLUG = ("00:0a:eb:00:00:20", "192.168.0.20")
CLOUD = "93.184.216.34"
T0 = 1_772_438_400.0  # 2026-03-02 08:00:00 UTC
LT_GATEWAY = "00:1c:7f:53:d0:28"


def frame(smac, dmac, src, dst, proto, l4, vlan=None):
    """An Ethernet frame, 802.1Q-tagged with ``vlan`` when given."""
    ip = ipv4(src, dst, proto, l4)
    if vlan is None:
        return ethernet(smac, dmac, ip)
    return ethernet(smac, dmac, struct.pack("!HH", vlan, 0x0800) + ip, ethertype=0x8100)


def write(path, packets):
    w = PcapWriter()
    for ts, f in packets:
        w.add(ts, f)
    w.write(path)
    return path


def flows_of(path, **kw):
    flows, problems = read_capture(path, **kw)
    assert not [p for p in problems if p.severity == "error"]
    return flows.sort("first_seen")


def dns_pair(vlan_reply=100, reply_after=0.3, with_query=True):
    q = synth.dns_query(7, "iot.example.com")
    a = synth.dns_response(7, "iot.example.com", CLOUD)
    out = []
    if with_query:
        out.append((T0, frame(CAM[0], GW[0], CAM[1], GW[1], 17,
                              udp(CAM[1], GW[1], 50000, 53, q))))
    out.append((T0 + reply_after, frame(GW[0], CAM[0], GW[1], CAM[1], 17,
                                        udp(GW[1], CAM[1], 53, 50000, a), vlan=vlan_reply)))
    return out


def test_split_dns_pair_merges_into_one_flow(tmp_path, monkeypatch):
    """The week-long captures tag the gateway's frames (VLAN 100) and not the device's: NFStream
    keys flows by VLAN and splits every exchange into a query and a lone reply."""
    import flockwatch.features.flows as flows_mod

    packets = dns_pair()
    path = write(tmp_path / "split.pcap", packets)
    monkeypatch.setattr(flows_mod, "orient", lambda df: df)
    raw = flows_of(path)
    assert raw.select("src_ip", "src_port", "vlan_id", "dst2src_packets").rows() == [
        (CAM[1], 50000, 0, 0), (GW[1], 53, 100, 0)]
    monkeypatch.undo()
    f = flows_of(path)
    assert f.height == 1
    r = f.row(0, named=True)
    assert (r["src_mac"], r["dst_mac"], r["src_ip"], r["src_port"], r["dst_ip"],
            r["dst_port"]) == (CAM[0], GW[0], CAM[1], 50000, GW[1], 53)
    assert (r["packets"], r["src2dst_packets"], r["dst2src_packets"]) == (2, 1, 1)
    assert r["bytes"] == raw["bytes"].sum()
    assert (r["src2dst_bytes"], r["dst2src_bytes"]) == tuple(raw["bytes"].to_list())
    assert r["application"].startswith("DNS") and r["server_name"] == "iot.example.com"
    assert r["first_seen"] == raw["first_seen"][0] and r["last_seen"] == raw["last_seen"][1]
    assert r["duration_ms"] == 300
    # Inter-arrival: one gap of 300 ms (exact for one packet each way).
    assert (r["min_piat_ms"], r["mean_piat_ms"], r["max_piat_ms"], r["stddev_piat_ms"]) == (
        300, 300, 300, 0)
    sizes = sorted(raw["min_ps"].to_list())
    assert (r["min_ps"], r["max_ps"]) == (sizes[0], sizes[1])
    assert r["mean_ps"] == pytest.approx(sum(sizes) / 2)
    assert r["stddev_ps"] == pytest.approx(abs(sizes[1] - sizes[0]) / 2 ** 0.5)


def test_lone_dns_reply_is_reoriented(tmp_path):
    f = flows_of(write(tmp_path / "lone.pcap", dns_pair(vlan_reply=None, with_query=False)))
    assert f.select("src_mac", "src_ip", "src_port", "dst_ip", "dst_port", "src2dst_packets",
                    "dst2src_packets").rows() == [(CAM[0], CAM[1], 50000, GW[1], 53, 0, 1)]
    # The DNS server answered and opened nothing.
    att = attribute(f).sort("direction")
    assert att.select("device_id", "direction", "packets_out", "packets_in").rows() == [
        (GW[0], "in", 1, 0), (CAM[0], "out", 0, 1)]


def test_reply_long_after_the_query_is_not_merged(tmp_path):
    f = flows_of(write(tmp_path / "late.pcap", dns_pair(reply_after=30.0)))
    # Two flows, both now oriented from the camera to the DNS server.
    assert f.select("src_ip", "dst_port", "src2dst_packets", "dst2src_packets").rows() == [
        (CAM[1], 53, 1, 0), (CAM[1], 53, 0, 1)]


def test_tcp_stream_first_seen_from_the_server_flips(tmp_path):
    c, s = CAM[1], CLOUD
    pk = []
    for i in range(3):  # mid-stream: the server pushes, the camera acknowledges
        pk.append((T0 + i, frame(GW[0], CAM[0], s, c, 6,
                                 tcp(s, c, 443, 51000, 5000 + i * 100, 1000, TCP_PSH | TCP_ACK,
                                     b"x" * 60))))
        pk.append((T0 + i + 0.05, frame(CAM[0], GW[0], c, s, 6,
                                        tcp(c, s, 51000, 443, 1000, 5100 + i * 100, TCP_ACK))))
    f = flows_of(write(tmp_path / "mid.pcap", pk))
    assert f.select("src_mac", "src_ip", "src_port", "dst_ip", "dst_port", "src2dst_packets",
                    "dst2src_packets").rows() == [(CAM[0], c, 51000, s, 443, 3, 3)]


def test_tcp_syn_from_a_service_port_does_not_flip(tmp_path):
    """Zeek trusts a SYN: an active FTP data connection opens from port 20 to an ephemeral
    port, and its opener stays the initiator."""
    srv, cli = PLUG[1], CAM[1]
    pk = [
        (T0, frame(PLUG[0], CAM[0], srv, cli, 6, tcp(srv, cli, 20, 40000, 100, 0, TCP_SYN))),
        (T0 + 0.01, frame(CAM[0], PLUG[0], cli, srv, 6,
                          tcp(cli, srv, 40000, 20, 900, 101, TCP_SYN | TCP_ACK))),
        (T0 + 0.02, frame(PLUG[0], CAM[0], srv, cli, 6,
                          tcp(srv, cli, 20, 40000, 101, 901, TCP_PSH | TCP_ACK, b"data"))),
    ]
    f = flows_of(write(tmp_path / "ftp.pcap", pk))
    assert f.select("src_ip", "src_port", "dst_port", "syn_packets").rows() == [
        (srv, 20, 40000, 2)]


def test_flow_to_broadcast_never_flips(tmp_path):
    offer = synth.dhcp_request(5, PLUG[0], "x")  # any DHCP payload: the ports decide
    pk = [(T0, frame(GW[0], "ff:ff:ff:ff:ff:ff", GW[1], "255.255.255.255", 17,
                     udp(GW[1], "255.255.255.255", 67, 68, offer)))]
    f = flows_of(write(tmp_path / "bcast.pcap", pk))
    assert f.select("src_ip", "src_port", "dst_ip").rows() == [(GW[1], 67, "255.255.255.255")]


def test_split_tcp_conversation_merges_chunk_by_chunk(tmp_path):
    """A long split conversation, cut by the active timeout on both sides: each part of the
    request merges with its reply part, none twice."""
    c, s = CAM[1], CLOUD
    pk = [(T0, frame(CAM[0], GW[0], c, s, 6, tcp(c, s, 51000, 8883, 1000, 0, TCP_SYN))),
          (T0 + 0.05, frame(GW[0], CAM[0], s, c, 6,
                            tcp(s, c, 8883, 51000, 7000, 1001, TCP_SYN | TCP_ACK), vlan=100))]
    for i in range(1, 31):  # every 10 s for 5 minutes
        pk.append((T0 + 10 * i, frame(CAM[0], GW[0], c, s, 6, tcp(
            c, s, 51000, 8883, 1000 + i, 7001, TCP_PSH | TCP_ACK, b"p" * 30))))
        pk.append((T0 + 10 * i + 0.05, frame(GW[0], CAM[0], s, c, 6, tcp(
            s, c, 8883, 51000, 7001, 1001 + i, TCP_ACK), vlan=100)))
    path = write(tmp_path / "long.pcap", pk)
    f = flows_of(path, active_timeout=60)
    assert f.height >= 5
    assert set(f["src_ip"]) == {c} and set(f["dst_port"]) == {8883}
    assert (f["src2dst_packets"] > 0).all() and (f["dst2src_packets"] > 0).all()
    assert f["packets"].sum() == len(pk)
    assert f["src2dst_packets"].sum() == f["dst2src_packets"].sum() == len(pk) // 2
    assert f["syn_packets"].to_list()[0] == 2 and f["syn_packets"].sum() == 2


def test_flow_cache_never_serves_an_older_extraction(tmp_path):
    from flockwatch.datasets.labelled import cached_flows, file_hash
    from flockwatch.features.output import write_parquet

    path = write(tmp_path / "split.pcap", dns_pair())
    cache = tmp_path / "cache"
    cache.mkdir()
    # What an earlier flockwatch cached for this capture: the split pair.
    old = conform(pl.DataFrame({"source": ["x", "x"], "src_ip": [CAM[1], GW[1]]}))
    write_parquet(old, cache / f"{file_hash(path)}.parquet")
    flows, _ = cached_flows(path, cache)
    assert flows.height == 1 and flows["dst2src_packets"].item() == 1
    again, _ = cached_flows(path, cache)
    assert again.drop("source").equals(flows.drop("source"))


# --- new peers need a real initiation -----------------------------------------------------

def _flow(t, src, dst, sport, dport, proto, *, packets=2, syn=0, ack=None, back=1):
    (smac, sip), (dmac, dip) = src, dst
    start = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC) + dt.timedelta(seconds=t)
    return {"source": "cap", "first_seen": start, "last_seen": start, "src_mac": smac,
            "dst_mac": dmac, "src_ip": sip, "dst_ip": dip, "src_port": sport, "dst_port": dport,
            "protocol": proto, "ip_version": 4, "packets": packets, "bytes": 100 * packets,
            "src2dst_packets": packets - back, "dst2src_packets": back,
            "src2dst_bytes": 100 * (packets - back), "dst2src_bytes": 100 * back,
            "syn_packets": syn, "ack_packets": packets if ack is None else ack}


def test_new_peer_needs_a_real_initiation():
    x, y, z, w = (("00:0a:eb:00:00:3" + str(i), f"192.168.0.3{i}") for i in range(4))
    learn = conform(pl.DataFrame([_flow(0, CAM, GW, 40000, 53, 17)]))
    test = conform(pl.DataFrame([
        _flow(600, x, CAM, 50001, 22, 6, packets=5, syn=2, ack=4),  # SSH opened: new peer
        _flow(610, y, CAM, 443, 50002, 6, packets=5),  # a stream's later part, no SYN
        _flow(620, z, CAM, 53, 40001, 17),  # a reply from port 53 (e.g. a Zeek log)
        _flow(630, w, CAM, 50003, 161, 17),  # an SNMP request: new peer
        _flow(635, CAM, y, 40003, 4444, 17),  # UDP to an unlisted port (exfiltration): new
        _flow(640, CAM, x, 40002, 80, 6, packets=1, syn=1, ack=0, back=0),  # a probe
    ]))
    spec = WindowSpec(300)
    peers = PeerBaseline().fit(attribute(learn))
    new = peers.new_peers(assign_windows(attribute(test), spec))
    cam = new.filter(pl.col("device_id") == CAM[0])
    assert sorted(p for ps in cam["new_peers"] for p in ps) == sorted(
        [f"{w[1]}:161", f"{x[1]}:22", f"{y[1]}:4444"])


# --- attribution ---------------------------------------------------------------------------

def test_dhcp_host_name_goes_to_the_client_not_the_server():
    """A DHCP server's ACK repeats the client's host name: the name is the client's (the
    side on port 68), whichever side sent it."""
    rows = [
        _flow(0, CAM, (GW[0], CLOUD), 40000, 443, 6, syn=2, ack=1),  # GW forwards: a gateway
        _flow(5, GW, PLUG, 67, 68, 17, back=0) | {"application": "DHCP",
                                                   "server_name": "plug-kitchen"},
    ]
    inv = inventory(conform(pl.DataFrame(rows)))
    names = dict(zip(inv["device_id"], inv["hostnames"].to_list(), strict=True))
    assert names.get(PLUG[0]) == ["plug-kitchen"]
    assert "plug-kitchen" not in names.get(GW[0], [])


def test_gateway_is_not_credited_with_the_hosts_it_forwards_for():
    """Pings from a host of another subnet arrive through the gateway's MAC: that host is not
    the gateway; the gateway's own address (its hosts' /24) still is."""
    other = (GW[0], "192.168.2.50")
    rows = [
        _flow(0, CAM, (GW[0], CLOUD), 40000, 443, 6, syn=2, ack=1),
        _flow(5, other, CAM, 0, 0, 1),
        _flow(9, GW, CAM, 0, 0, 1),  # the gateway pings the camera itself
    ]
    inv = inventory(conform(pl.DataFrame(rows)))
    ips = dict(zip(inv["device_id"], inv["ips"].to_list(), strict=True))
    assert ips[GW[0]] == [GW[1]]
    assert ips[CAM[0]] == [CAM[1]]


@pytest.mark.parametrize("addr", ["0.0.0.0", "127.0.0.1", "::", "::1"])
def test_unspecified_and_loopback_are_never_devices(addr):
    other = "127.0.0.2" if "." in addr else "ff02::1"
    no_l2 = [_flow(0, (None, addr), (None, other), 40000, 502, 6, syn=2, ack=1)]
    assert inventory(conform(pl.DataFrame(no_l2))).height == 0
    # With a MAC the device is the MAC's (a DHCP client at 0.0.0.0); the address is not listed.
    bcast = "255.255.255.255" if "." in addr else "ff02::1:2"
    l2 = [_flow(0, (CAM[0], addr), ("ff:ff:ff:ff:ff:ff", bcast), 68, 67, 17, back=0)]
    inv = inventory(conform(pl.DataFrame(l2)))
    assert inv["device_id"].to_list() == [CAM[0]] and inv["ips"].to_list() == [[]]


def test_loopback_capture_holds_no_device(shared_data):
    path = shared_data / "ics-protocols" / "dnp3" / "emreekin__DNP3_DNP3ValueBinary.pcap"
    flows = flows_of(path)
    assert flows.height > 0
    ids = set(inventory(flows)["device_id"])
    assert not ids & {"0.0.0.0", "127.0.0.1", "::", "::1"}


# --- the shared week-long captures ---------------------------------------------------------

@pytest.fixture(scope="module")
def lockly():
    from conftest import data_dir

    path = data_dir() / "long-term-iot" / "lockly-hub" / "lockly-hub-01.pcap"
    if not path.exists():
        pytest.skip(f"shared captures not found at {path.parent} (set FLOCKWATCH_DATA)")
    return flows_of(path)


def test_weeklong_dns_replies_are_not_the_gateway_opening_conversations(lockly):
    dns = lockly.filter((pl.col("protocol") == 17)
                        & ((pl.col("dst_port") == 53) | (pl.col("src_port") == 53)))
    # Before: 24 of the hub's 48 DNS flows were lone replies from the gateway.
    assert dns.filter(pl.col("src_mac") == LT_GATEWAY).height == 0
    assert (dns["dst_port"] == 53).all() and dns.height >= 24
    # A query and its reply (split by the gateway's VLAN tag) are one flow with both.
    pair = dns.filter(pl.col("src_port") == 62786).row(0, named=True)
    assert (pair["vlan_id"], pair["packets"], pair["src2dst_packets"],
            pair["dst2src_packets"]) == (0, 4, 2, 2)
    # Every MQTT conversation is the hub's, to the broker's port, with both directions.
    mqtt = lockly.filter(pl.col("protocol") == 6)
    assert (mqtt["src_ip"] == "192.168.1.128").all() and (mqtt["dst_port"] == 1883).all()
    assert (mqtt["dst2src_packets"] > 0).mean() > 0.95


def test_weeklong_inventory_attribution(lockly, shared_data):
    sifely, _ = read_capture(shared_data / "long-term-iot" / "sifely-hub" / "sifely-hub-01.pcap")
    inv = inventory(pl.concat([lockly, sifely]))
    rows = {r["device_id"]: r for r in inv.iter_rows(named=True)}
    # The gateway only answers and forwards: it opens nothing from an address of its own.
    assert LT_GATEWAY not in rows
    assert "sifely-hub-01" in rows["f4:cf:a2:eb:59:c4"]["hostnames"]
    assert rows["24:6f:28:d9:a7:64"]["ips"] == ["192.168.1.128"]
    assert all(len(r["ips"]) <= 1 for r in rows.values())


def test_weeklong_new_peers_are_only_the_ping_episode(lockly):
    """Learning the first three days, the hub's only new local peer is the host of another
    subnet that pings it on 12 March; before, every lone DNS reply was one."""
    t0 = lockly["first_seen"].min()
    cut = t0 + dt.timedelta(days=3)
    att = assign_windows(attribute(lockly), WindowSpec(300))
    peers = PeerBaseline().fit(att.filter(pl.col("first_seen") < cut))
    new = peers.new_peers(att.filter(pl.col("first_seen") >= cut))
    found = {p for ps in new["new_peers"] for p in ps}
    assert found == {"192.168.2.50:0"}

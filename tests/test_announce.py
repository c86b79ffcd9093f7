"""Announcements (features/announce.py): the parsers on packets built with dpkt, the link
types and capture formats the pass reads, malformed input, orientation of ``>``/``<``, and
the strings real devices of the shared IoT Sentinel captures announce, through
``read_capture`` (real NFStream)."""

from __future__ import annotations

import datetime as dt
import random
import socket
import struct

import dpkt
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flockwatch.datasets.pcap import PcapWriter, ethernet, ipv4, udp
from flockwatch.features import InputError, conform, read_capture
from flockwatch.features.announce import (
    MAX_PER_ENDPOINT,
    _parse,
    attach_announcements,
    read_announcements,
)
from flockwatch.features.captures import inspect_capture
from flockwatch.features.orient import orient

DEV = ("00:17:88:00:00:06", "192.168.0.6")
PC = ("00:0a:eb:00:00:05", "192.168.0.5")
MDNS = ("01:00:5e:00:00:fb", "224.0.0.251")
SSDP = ("01:00:5e:7f:ff:fa", "239.255.255.250")
BCAST = ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
T0 = 1_772_438_400.0


def dhcp_discover(vendor: bytes) -> bytes:
    msg = dpkt.dhcp.DHCP(chaddr=bytes.fromhex("001788000006"), xid=0x1234,
                         opts=((dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPDISCOVER])),
                               (dpkt.dhcp.DHCP_OPT_VENDOR_ID, vendor)))
    return bytes(msg)


def mdns_answer() -> bytes:
    """A HomeKit accessory's announcement: PTR, SRV and TXT of its instance."""
    msg = dpkt.dns.DNS(id=0, op=dpkt.dns.DNS_AA | 0x8000)
    msg.an = [
        dpkt.dns.DNS.RR(name="_hap._tcp.local", type=dpkt.dns.DNS_PTR, cls=1, ttl=4500,
                        ptrname="Kitchen Light 3A1F._hap._tcp.local"),
        dpkt.dns.DNS.RR(name="Kitchen Light 3A1F._hap._tcp.local", type=dpkt.dns.DNS_SRV,
                        cls=0x8001, ttl=120, srvname="kitchen-3a1f.local", port=8080,
                        priority=0, weight=0),
        dpkt.dns.DNS.RR(name="_services._dns-sd._udp.local", type=dpkt.dns.DNS_PTR, cls=1,
                        ttl=4500, ptrname="_hue._tcp.local"),
    ]
    return bytes(msg)


def mdns_query(*names: str) -> bytes:
    msg = dpkt.dns.DNS(id=0, op=0)
    msg.qd = [dpkt.dns.DNS.Q(name=n, type=dpkt.dns.DNS_PTR, cls=1) for n in names]
    return bytes(msg)


NOTIFY = (b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=86400\r\n"
          b"LOCATION: http://192.168.0.6:49153/setup.xml\r\nNT: urn:Belkin:device:controllee:1\r\n"
          b"NTS: ssdp:alive\r\nSERVER: Unspecified, UPnP/1.0, Unspecified\r\n"
          b"X-User-Agent: redsonic\r\n"
          b"USN: uuid:Socket-1_0-221517K0101769::urn:Belkin:device:controllee:1\r\n\r\n")
MSEARCH = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
           b"MX: 2\r\nST: urn:dial-multiscreen-org:service:dial:1\r\n"
           b"USER-AGENT: Google Chrome/120.0 Linux\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=100\r\nEXT:\r\n"
            b"LOCATION: http://192.168.0.6:80/description.xml\r\n"
            b"SERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0\r\n"
            b"ST: uuid:2f402f80-da50-11e1-9b23-001788246fff\r\n"
            b"USN: uuid:2f402f80-da50-11e1-9b23-001788246fff\r\n\r\n")


def udp_frame(a, b, sport, dport, payload, *, vlans=()):
    ip = ipv4(a[1], b[1], 17, udp(a[1], b[1], sport, dport, payload))
    tags = b"".join(struct.pack("!HH", v, 0x8100 if i < len(vlans) - 1 else 0x0800)
                    for i, v in enumerate(vlans))
    return ethernet(a[0], b[0], tags + ip, ethertype=(0x88A8 if len(vlans) > 1 else 0x8100)
                    if vlans else 0x0800)


# --- the parsers, on packets built by dpkt -------------------------------------------------

def test_dhcp_vendor_class():
    assert _parse(68, 67, dhcp_discover(b"udhcp 1.19.4")) == ["dhcp_vendor_class=udhcp 1.19.4"]
    assert _parse(68, 67, dhcp_discover(b"  MSFT\x00 5.0\n")) == ["dhcp_vendor_class=MSFT 5.0"]
    assert _parse(68, 67, dhcp_discover(b"x" * 250)) == ["dhcp_vendor_class=" + "x" * 200]


def test_dhcpv6_vendor_class():
    opt16 = struct.pack("!I", 311) + struct.pack("!H", 8) + b"MSFT 5.0"
    msg = bytes([1, 0, 0, 1]) + struct.pack("!HH", 16, len(opt16)) + opt16
    assert _parse(546, 547, msg) == ["dhcpv6_vendor_class=311:MSFT 5.0"]


def test_mdns_service_types_never_instance_names():
    assert _parse(5353, 5353, mdns_answer()) == ["mdns_service=_hap._tcp",
                                                 "mdns_service=_hue._tcp"]
    assert _parse(5353, 5353, mdns_query("_googlecast._tcp.local",
                                         "_printer._sub._http._tcp.local",
                                         "_services._dns-sd._udp.local",
                                         "6.0.168.192.in-addr.arpa")) == [
        "mdns_service=_googlecast._tcp", "mdns_service=_http._tcp"]


def test_ssdp_strings_without_unit_uuids():
    assert _parse(3074, 1900, NOTIFY) == [
        "ssdp_nt=urn:Belkin:device:controllee:1",
        "ssdp_server=Unspecified, UPnP/1.0, Unspecified",
        "ssdp_usn=urn:Belkin:device:controllee:1",
    ]
    assert _parse(50000, 1900, MSEARCH) == ["ssdp_st=urn:dial-multiscreen-org:service:dial:1",
                                            "ssdp_user_agent=Google Chrome/120.0 Linux"]
    # ST and USN that are only the unit's uuid are left out
    assert _parse(1900, 50000, RESPONSE) == [
        "ssdp_server=Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0"]
    assert _parse(1900, 1900, b"GET / HTTP/1.1\r\nSERVER: x\r\n") == []


# --- malformed input -----------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.sampled_from([67, 68, 546, 547, 5353, 1900]), st.binary(max_size=600))
def test_garbage_payloads_never_raise(port, payload):
    assert isinstance(_parse(port, 40000, payload), list)


def test_truncated_and_garbled_packets_are_skipped(tmp_path):
    """Every prefix of every announcing frame, and copies with random bytes overwritten: no
    exception, and the whole frames still give their strings."""
    rng = random.Random(7)
    frames = [udp_frame(DEV, BCAST, 68, 67, dhcp_discover(b"udhcp 1.19.4")),
              udp_frame(DEV, MDNS, 5353, 5353, mdns_answer()),
              udp_frame(DEV, SSDP, 3074, 1900, NOTIFY, vlans=(100,))]
    w = PcapWriter()
    t = T0
    for f in frames:
        for cut in range(len(f)):
            w.add(t := t + 0.001, f[:cut])
        for _ in range(200):
            g = bytearray(f)
            for _ in range(rng.randint(1, 8)):
                g[rng.randrange(len(g))] = rng.randrange(256)
            w.add(t := t + 0.001, bytes(g))
        # compression pointers that loop, counts far beyond the data
        w.add(t := t + 0.001, udp_frame(DEV, MDNS, 5353, 5353,
                                        b"\0\0\x84\0\xff\xff\xff\xff\0\0\0\0\xc0\x0c\xc0\x0c"))
    w.add(t + 1, frames[1])
    w.write(tmp_path / "bad.pcap")
    ann = read_announcements(tmp_path / "bad.pcap")
    assert "mdns_service=_hap._tcp" in ann["entry"].to_list()
    # a cut capture file (record past the end) reads what is whole
    data = (tmp_path / "bad.pcap").read_bytes()
    (tmp_path / "cut.pcap").write_bytes(data[:len(data) - 7])
    read_announcements(tmp_path / "cut.pcap")


# --- link types and formats ----------------------------------------------------------------

def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return (struct.pack("!IHBB", 0x60000000, len(seg), 17, 255)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + seg)


def test_link_types_vlans_ipv6_and_pcapng(tmp_path):
    v4 = ipv4(DEV[1], MDNS[1], 17, udp(DEV[1], MDNS[1], 5353, 5353, mdns_answer()))
    v6 = ipv6_udp("fe80::217:88ff:fe24:76ff", "ff02::fb", 5353, 5353, mdns_answer())
    cases = {
        "qinq": (1, udp_frame(DEV, SSDP, 1900, 1900, NOTIFY, vlans=(100, 7))),
        "sll": (113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + v4),
        "sll2": (276, struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"\0" * 8) + v6),
        "raw": (101, v4),
        "ipv6eth": (1, ethernet(DEV[0], "33:33:00:00:00:fb", v6, ethertype=0x86DD)),
    }
    for name, (linktype, frame) in cases.items():
        w = PcapWriter(linktype=linktype)
        w.add(T0, frame)
        w.write(tmp_path / f"{name}.pcap")
        got = read_announcements(tmp_path / f"{name}.pcap")
        assert got.height > 0, name
    six = read_announcements(tmp_path / "sll2.pcap").row(0, named=True)
    assert six["src_ip"] == "fe80::217:88ff:fe24:76ff" and six["dst_ip"] == "ff02::fb"
    qinq = read_announcements(tmp_path / "qinq.pcap")
    assert "ssdp_usn=urn:Belkin:device:controllee:1" in qinq["entry"].to_list()
    # the same frame in a pcapng (section, interface, enhanced packet block)
    frame = cases["qinq"][1]
    pad = bytes(-len(frame) % 4)
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idb = struct.pack("<IIHHII", 1, 20, 1, 0, 0, 20)
    blen = 32 + len(frame) + len(pad)
    epb = struct.pack("<IIIIIII", 6, blen, 0, 0, 0, len(frame), len(frame)) + frame + pad
    (tmp_path / "x.pcapng").write_bytes(shb + idb + epb + struct.pack("<I", blen))
    assert read_announcements(tmp_path / "x.pcapng").equals(qinq)


def test_values_per_endpoint_are_capped(tmp_path):
    w = PcapWriter()
    for i in range(MAX_PER_ENDPOINT + 20):
        w.add(T0 + i, udp_frame(DEV, SSDP, 1900, 1900,
                                b"NOTIFY * HTTP/1.1\r\nNT: urn:x:service:s%d:1\r\n\r\n" % i))
    w.write(tmp_path / "chatty.pcap")
    assert read_announcements(tmp_path / "chatty.pcap").height == MAX_PER_ENDPOINT


# --- orientation ---------------------------------------------------------------------------

def test_reply_first_flow_flips_and_the_sender_stays_right(tmp_path):
    """A unicast SSDP reply seen without its search: the flow turns round (the searcher's
    ephemeral port is the initiator), so the device's strings are the responder's: ``<``."""
    w = PcapWriter()
    w.add(T0, udp_frame(DEV, PC, 1900, 50000, RESPONSE))
    w.add(T0 + 1, udp_frame(PC, DEV, 50000, 1900, MSEARCH))
    w.add(T0 + 2, udp_frame(DEV, BCAST, 68, 67, dhcp_discover(b"udhcp 1.19.4")))
    w.write(tmp_path / "reply.pcap")
    flows, _ = read_capture(tmp_path / "reply.pcap")
    ssdp = flows.filter(pl.col("dst_port") == 1900).row(0, named=True)
    assert (ssdp["src_ip"], ssdp["src_port"]) == (PC[1], 50000)
    assert ssdp["announcements"] == "\n".join([  # plain string order: "<" before ">"
        "<ssdp_server=Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0",
        ">ssdp_st=urn:dial-multiscreen-org:service:dial:1",
        ">ssdp_user_agent=Google Chrome/120.0 Linux",
    ])
    dhcp = flows.filter(pl.col("dst_port") == 67).row(0, named=True)
    assert dhcp["announcements"] == ">dhcp_vendor_class=udhcp 1.19.4"
    off, _ = read_capture(tmp_path / "reply.pcap", announcements=False)
    assert off["announcements"].null_count() == off.height
    assert off.drop("announcements").equals(flows.drop("announcements"))


def test_orient_flips_and_merges_announcements():
    t = dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC)
    base = {"source": "x", "protocol": 17, "packets": 1, "bytes": 100, "src2dst_bytes": 100,
            "dst2src_packets": 0, "dst2src_bytes": 0, "src2dst_packets": 1, "min_ps": 100.0,
            "mean_ps": 100.0, "max_ps": 100.0, "stddev_ps": 0.0}
    query = {**base, "first_seen": t, "last_seen": t, "src_ip": PC[1], "src_port": 50000,
             "dst_ip": DEV[1], "dst_port": 1900, "announcements": ">ssdp_st=ssdp:all"}
    reply = {**base, "first_seen": t + dt.timedelta(milliseconds=5),
             "last_seen": t + dt.timedelta(milliseconds=5), "src_ip": DEV[1], "src_port": 1900,
             "dst_ip": PC[1], "dst_port": 50000, "announcements": ">ssdp_server=S\n<ssdp_st=x"}
    merged = orient(conform(pl.DataFrame([query, reply])))
    assert merged.height == 1
    assert merged["announcements"][0] == "<ssdp_server=S\n>ssdp_st=ssdp:all\n>ssdp_st=x"
    flipped = orient(conform(pl.DataFrame([reply])))
    assert flipped["src_port"][0] == 50000
    assert flipped["announcements"][0] == "<ssdp_server=S\n>ssdp_st=x"


def test_attach_matches_either_orientation():
    flows = conform(pl.DataFrame({"src_ip": [PC[1], DEV[1], PC[1]], "src_port": [50000, 5353, 1],
                                  "dst_ip": [DEV[1], MDNS[1], DEV[1]],
                                  "dst_port": [1900, 5353, 2], "protocol": [17, 17, 6]}))
    ann = pl.DataFrame({"src_ip": [DEV[1], PC[1], DEV[1], DEV[1]],
                        "src_port": [1900, 50000, 5353, 2],
                        "dst_ip": [PC[1], DEV[1], MDNS[1], PC[1]],
                        "dst_port": [50000, 1900, 5353, 1],
                        "entry": ["ssdp_server=S", "ssdp_st=a", "mdns_service=_hap._tcp", "x=y"]},
                       schema_overrides={"src_port": pl.Int32, "dst_port": pl.Int32})
    got = attach_announcements(flows, ann)["announcements"].to_list()
    assert got == ["<ssdp_server=S\n>ssdp_st=a", ">mdns_service=_hap._tcp", None]


# --- real devices, through NFStream --------------------------------------------------------

def announced(flows: pl.DataFrame) -> dict[tuple[str, int, str, int], list[str]]:
    rows = flows.filter(pl.col("announcements").is_not_null())
    return {(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"]):
            r["announcements"].split("\n") for r in rows.iter_rows(named=True)}


def test_hue_bridge_announces_hap_ssdp_and_udhcp(shared_data):
    flows, _ = read_capture(shared_data / "iot-sentinel" / "HueBridge" / "Setup-A-1-STA.pcap")
    assert announced(flows) == {
        ("0.0.0.0", 68, "255.255.255.255", 67): [">dhcp_vendor_class=udhcp 1.19.4"],
        ("10.10.10.6", 5353, "224.0.0.251", 5353): [">mdns_service=_hap._tcp"],
        ("fe80::217:88ff:fe24:76ff", 5353, "ff02::fb", 5353): [">mdns_service=_hap._tcp"],
        ("10.10.10.6", 1900, "239.255.255.250", 1900): [
            ">ssdp_nt=upnp:rootdevice",
            ">ssdp_nt=urn:schemas-upnp-org:device:basic:1",
            ">ssdp_server=Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0",
            ">ssdp_usn=upnp:rootdevice",
        ],
    }


def test_wemo_switch_announces_its_belkin_device_type(shared_data):
    flows, _ = read_capture(shared_data / "iot-sentinel" / "WeMoSwitch" / "Setup-A-1-STA.pcap")
    got = announced(flows)
    assert got[("0.0.0.0", 68, "255.255.255.255", 67)] == [">dhcp_vendor_class=udhcp 1.22.1"]
    notify = got[("10.10.10.252", 3074, "239.255.255.250", 1900)]
    services = ["WiFiSetup", "basicevent", "crockpotevent", "deviceevent", "deviceinfo",
                "firmwareupdate", "jardenevent", "manufacture", "metainfo", "remoteaccess",
                "rules", "smartsetup", "timesync"]
    expected = [">ssdp_nt=upnp:rootdevice", ">ssdp_nt=urn:Belkin:device:controllee:1",
                *[f">ssdp_nt=urn:Belkin:service:{s}:1" for s in services],
                ">ssdp_server=Unspecified, UPnP/1.0, Unspecified",
                ">ssdp_usn=upnp:rootdevice", ">ssdp_usn=urn:Belkin:device:controllee:1",
                *[f">ssdp_usn=urn:Belkin:service:{s}:1" for s in services]]
    assert notify == sorted(expected)
    assert not any("uuid" in e for e in notify)


def test_withings_and_lightify(shared_data):
    withings, _ = read_capture(shared_data / "iot-sentinel" / "Withings" / "Setup-A-1-STA.pcap")
    assert announced(withings) == {
        ("0.0.0.0", 68, "255.255.255.255", 67): [">dhcp_vendor_class=Withings00"]}
    lightify, _ = read_capture(shared_data / "iot-sentinel" / "Lightify" / "Setup-C-1-STA.pcap")
    assert announced(lightify) == {
        ("10.10.10.114", 5353, "224.0.0.251", 5353): [">mdns_service=_http._tcp"]}


def test_pcapng_read_from_a_repaired_copy_keeps_its_announcements(tmp_path):
    """A pcapng with an Ethernet and a raw-IP interface: libpcap reads only the first's link
    type, so NFStream reads repaired copies (one per link type); the announcement pass reads
    the original, and the flows of both interfaces get their strings."""
    shb = struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28)
    idbs = b"".join(struct.pack("<IIHHII", 1, 20, lt, 0, 0, 20) for lt in (1, 101))

    def epb(iface: int, ts: float, frame: bytes) -> bytes:
        us = int(ts * 1e6)
        pad = bytes(-len(frame) % 4)
        blen = 32 + len(frame) + len(pad)
        return (struct.pack("<IIIIIII", 6, blen, iface, us >> 32, us & 0xFFFFFFFF, len(frame),
                            len(frame)) + frame + pad + struct.pack("<I", blen))

    raw = ipv4(DEV[1], SSDP[1], 17, udp(DEV[1], SSDP[1], 3074, 1900, NOTIFY))
    (tmp_path / "mixed.pcapng").write_bytes(
        shb + idbs + epb(0, T0, udp_frame(DEV, BCAST, 68, 67, dhcp_discover(b"udhcp 1.22.1")))
        + epb(1, T0 + 1, raw))
    assert inspect_capture(tmp_path / "mixed.pcapng").needs_repair
    flows, _ = read_capture(tmp_path / "mixed.pcapng")
    assert announced(flows) == {
        (DEV[1], 68, BCAST[1], 67): [">dhcp_vendor_class=udhcp 1.22.1"],
        (DEV[1], 3074, SSDP[1], 1900): [
            ">ssdp_nt=urn:Belkin:device:controllee:1",
            ">ssdp_server=Unspecified, UPnP/1.0, Unspecified",
            ">ssdp_usn=urn:Belkin:device:controllee:1"],
    }


@pytest.mark.parametrize("content", [b"", b"\xd4\xc3\xb2\xa1\x02\x00", b"hello world, no capture"])
def test_no_capture_is_an_input_error(tmp_path, content):
    (tmp_path / "x.pcap").write_bytes(content)
    with pytest.raises(InputError, match="x.pcap"):
        read_announcements(tmp_path / "x.pcap")

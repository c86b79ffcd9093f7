"""Normal traffic: one function per behaviour of the site's devices.

Human-driven traffic follows the time of day; machine traffic is periodic with jitter. The
functions draw from the one ``rng`` in turn, so :data:`BEHAVIOURS` is ordered and its order is
part of a seed's bytes: reorder it (or change a draw) and every capture changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from flockwatch.datasets.pcap import udp
from flockwatch.datasets.synth.protocols import (
    S7_COTP_CC,
    S7_COTP_CR,
    S7_READ,
    S7_READ_ACK,
    S7_SETUP,
    S7_SETUP_ACK,
    dhcp_request,
    mdns_announce,
    modbus_read,
    modbus_read_resp,
    mqtt_connect,
    mqtt_publish,
    ntp_packet,
    rtp_packet,
    sip_invite,
    sip_ok,
    sip_register,
    snmp_get,
    snmp_response,
)
from flockwatch.datasets.synth.site import CLOUD, GATEWAY, HOSTS, NTP_SERVER, host
from flockwatch.datasets.synth.traffic import Traffic, activity, poisson_times, times

Behaviour = Callable[[Traffic, float, float], None]


def leases_and_clock(tr: Traffic, t0: float, t1: float) -> None:
    """Every host renews its DHCP lease; all but the OT hosts and the PBX sync NTP."""
    rng = tr.rng
    for h in HOSTS:
        # DHCP lease renewals (unicast REQUEST carrying the host name) every 30 min.
        for ts in times(rng, t0, t1, 1800.0, 0.02):
            tr.udp_exchange(float(ts), h.ip, GATEWAY.ip, 67,
                            dhcp_request(int(rng.integers(0, 2**31)), h.mac, h.name),
                            dhcp_request(int(rng.integers(0, 2**31)), h.mac, h.name)[:240]
                            + b"\x63\x82\x53\x63\x35\x01\x05\xff", sport=68)
        if h.name in ("plc", "s7-controller", "hmi", "pbx"):
            continue
        for ts in times(rng, t0, t1, 900.0):
            tr.resolve(ts, h, "pool.ntp.org", NTP_SERVER)
            tr.udp_exchange(ts + 0.01, h.ip, NTP_SERVER, 123, ntp_packet(3), ntp_packet(4),
                            sport=123, rtt=0.02)


def cameras(tr: Traffic, t0: float, t1: float) -> None:
    """Cloud keep-alive TLS every 60 s, clip uploads, RTSP views by the workstation."""
    rng = tr.rng
    for name in ("camera-1", "camera-2"):
        h = host(name)
        sni, cip = CLOUD[name]
        for ts in times(rng, t0, t1, 60.0):
            tr.tls(ts, h, sni, cip, n_up=2, n_down=1, size_up=200, size_down=300)
        for ts in poisson_times(rng, t0, t1, 6, "office"):
            tr.resolve(ts - 0.05, h, sni, cip)
            tr.tls(ts, h, sni, cip, n_up=int(rng.integers(40, 120)), n_down=1, size_up=1300)
        for ts in poisson_times(rng, t0, t1, 2, "office"):
            ws = host("workstation")
            opts = f"OPTIONS rtsp://{h.ip}/stream1 RTSP/1.0\r\nCSeq: 1\r\n\r\n".encode()
            ok = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n"
            play = f"PLAY rtsp://{h.ip}/stream1 RTSP/1.0\r\nCSeq: 2\r\n\r\n".encode()
            frames = [b"$\x00" + rng.bytes(1300) for _ in range(int(rng.integers(30, 80)))]
            tr.tcp_session(ts, ws.ip, h.ip, 554, [(opts, ok), (play, frames)], gap=0.1)


def phones(tr: Traffic, t0: float, t1: float) -> None:
    """SIP REGISTER every 300 s to the PBX, calls in office hours with RTP, hourly cloud TLS."""
    rng = tr.rng
    for i, name in enumerate(("phone-1", "phone-2")):
        h, pbx = host(name), host("pbx")
        ext = 101 + i
        for k, ts in enumerate(times(rng, t0, t1, 300.0, 0.01)):
            tr.udp_exchange(ts, h.ip, pbx.ip, 5060, sip_register(h, pbx, k + 1, ext),
                            sip_ok("REGISTER", k + 1), sport=5060)
        for k, ts in enumerate(poisson_times(rng, t0, t1, 3, "office")):
            tr.udp_exchange(ts, h.ip, pbx.ip, 5060, sip_invite(h, pbx, 1000 + k, ext, 200),
                            sip_ok("INVITE", 1000 + k), sport=5060)
            dur = float(rng.uniform(20, 90))
            ssrc = int(rng.integers(1, 2**31))
            for j, tt in enumerate(np.arange(ts + 0.5, ts + 0.5 + dur, 0.06)):
                tr.frame(float(tt), h.ip, pbx.ip, udp(h.ip, pbx.ip, 16384, 10000 + 2 * i,
                                                      rtp_packet(j, j * 160, ssrc, rng)), 17)
                tr.frame(float(tt) + 0.01, pbx.ip, h.ip,
                         udp(pbx.ip, h.ip, 10000 + 2 * i, 16384,
                             rtp_packet(j, j * 160, ssrc + 1, rng)), 17)
        sni, cip = CLOUD[name]
        for ts in times(rng, t0, t1, 3600.0):
            tr.resolve(ts, h, sni, cip)
            tr.tls(ts + 0.05, h, sni, cip, n_up=1, n_down=3)


def printer(tr: Traffic, t0: float, t1: float) -> None:
    """mDNS announcements, SNMP polled by the workstation, IPP jobs in office hours."""
    rng = tr.rng
    pr, ws = host("printer"), host("workstation")
    for ts in times(rng, t0, t1, 120.0):
        tr.udp_exchange(ts, pr.ip, "224.0.0.251", 5353,
                        mdns_announce("HP-LaserJet-4.local", "_ipp._tcp.local"), None, sport=5353)
    for ts in times(rng, t0, t1, 300.0, 0.01):
        tr.udp_exchange(ts, ws.ip, pr.ip, 161, snmp_get(), snmp_response())
    for ts in poisson_times(rng, t0, t1, 4, "office"):
        body = rng.bytes(int(rng.integers(2000, 30000)))
        req = (f"POST /ipp/print HTTP/1.1\r\nHost: {pr.ip}:631\r\nContent-Type: application/ipp"
               f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        chunks = [req] + [body[i:i + 1400] for i in range(0, len(body), 1400)]
        ex: list[tuple[bytes, bytes | list[bytes]]] = [(c, b"") for c in chunks[:-1]]
        ex.append((chunks[-1], b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\n\r\n"))
        tr.tcp_session(ts, ws.ip, pr.ip, 631, ex, gap=0.01)


def smart_tv(tr: Traffic, t0: float, t1: float) -> None:
    """SSDP NOTIFY, streaming in the evening (and some at midday)."""
    rng = tr.rng
    tv = host("smart-tv")
    notify = (f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800"
              f"\r\nLOCATION: http://{tv.ip}:9197/dmr\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive"
              "\r\nSERVER: Tizen/4.0 UPnP/1.0\r\nUSN: uuid:tv-51::upnp:rootdevice\r\n\r\n").encode()
    for ts in times(rng, t0, t1, 180.0):
        tr.udp_exchange(ts, tv.ip, "239.255.255.250", 1900, notify, None, sport=1900)
    sni, cip = CLOUD["smart-tv"]
    for ts in times(rng, t0, t1, 30.0):
        if rng.uniform() < activity(ts, "evening"):
            tr.tls(ts, tv, sni, cip, n_up=1, n_down=int(rng.integers(60, 140)), size_down=1400)
    for ts in times(rng, t0, t1, 1800.0):
        tr.resolve(ts, tv, sni, cip)


def smart_home(tr: Traffic, t0: float, t1: float) -> None:
    """Smart plugs and thermostat: MQTT over TLS (8883) heartbeats, telemetry publishes."""
    rng = tr.rng
    for name, period in (("plug-1", 60.0), ("plug-2", 60.0), ("thermostat", 30.0)):
        h = host(name)
        sni, cip = CLOUD[name]
        for ts in times(rng, t0, t1, period, 0.02):
            tr.tls(ts, h, sni, cip, n_up=1, n_down=1, size_up=90, size_down=60, dport=8883)
        for ts in times(rng, t0, t1, 1800.0):
            tr.resolve(ts, h, sni, cip)
    th = host("thermostat")
    for ts in times(rng, t0, t1, 600.0):
        tr.tcp_session(ts, th.ip, "35.186.1.72", 1883,
                       [(mqtt_connect("nest-therm-71"), b"\x20\x02\x00\x00"),
                        (mqtt_publish("home/thermostat/temp", b"21.5"), b"")])


def modbus_polling(tr: Traffic, t0: float, t1: float) -> None:
    """The HMI polls the PLC over Modbus/TCP every 2 s on connections renewed every 10 min."""
    rng = tr.rng
    hmi, plc = host("hmi"), host("plc")
    t = t0 + float(rng.uniform(0, 2))
    tid = 0
    while t < t1:
        seg_end = min(t1, t + 600.0)
        polls: list[tuple[bytes, bytes | Sequence[bytes]]] = []
        n = int((seg_end - t) / 2.0)
        for _ in range(max(1, n)):
            tid = (tid + 1) & 0xFFFF
            polls.append((modbus_read(tid), modbus_read_resp(tid, rng)))
        tr.tcp_session(t, hmi.ip, plc.ip, 502, polls, gap=2.0, rtt=0.002, sport=tr.eph())
        t = seg_end + float(rng.uniform(0.5, 1.5))


def s7_polling(tr: Traffic, t0: float, t1: float) -> None:
    """The HMI reads the S7 controller every 5 s on connections renewed every 15 min."""
    rng = tr.rng
    hmi, s7 = host("hmi"), host("s7-controller")
    t = t0 + float(rng.uniform(0, 5))
    while t < t1:
        seg_end = min(t1, t + 900.0)
        n = int((seg_end - t) / 5.0)
        s7x: list[tuple[bytes, bytes | Sequence[bytes]]] = [(S7_COTP_CR, S7_COTP_CC),
                                                             (S7_SETUP, S7_SETUP_ACK)]
        s7x += [(S7_READ, S7_READ_ACK)] * max(1, n)
        tr.tcp_session(t, hmi.ip, s7.ip, 102, s7x, gap=5.0, rtt=0.003)
        t = seg_end + float(rng.uniform(0.5, 1.5))


def workstation(tr: Traffic, t0: float, t1: float) -> None:
    """Web browsing in office hours and hourly update checks."""
    rng = tr.rng
    ws = host("workstation")
    for ts in poisson_times(rng, t0, t1, 40, "office"):
        sni = f"www.site{int(rng.integers(0, 30))}.example.org"
        ip = f"93.184.{int(rng.integers(1, 250))}.{int(rng.integers(1, 250))}"
        tr.resolve(ts - 0.03, ws, sni, ip)
        tr.tls(ts, ws, sni, ip, n_up=int(rng.integers(1, 5)), n_down=int(rng.integers(5, 60)))
    sni, cip = CLOUD["workstation"]
    for ts in times(rng, t0, t1, 3600.0):
        tr.resolve(ts, ws, sni, cip)
        tr.tls(ts + 0.03, ws, sni, cip, n_up=2, n_down=20)


#: The site's normal traffic, in the order it draws from the generator.
BEHAVIOURS: tuple[Behaviour, ...] = (
    leases_and_clock, cameras, phones, printer, smart_tv, smart_home, modbus_polling,
    s7_polling, workstation,
)


def normal_traffic(tr: Traffic, t0: float, t1: float) -> None:
    for behaviour in BEHAVIOURS:
        behaviour(tr, t0, t1)

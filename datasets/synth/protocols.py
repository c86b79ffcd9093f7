"""Payload builders: the application-layer bytes each protocol of the site puts on the wire.

Pure functions of their arguments (and of ``rng`` where a real stack would send random bytes),
so the same draws give the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from flockwatch.datasets.synth.site import Host


def _dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def dns_query(txid: int, name: str, qtype: int = 1) -> bytes:
    return struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0) + _dns_name(name) + struct.pack(
        "!HH", qtype, 1)


def dns_response(txid: int, name: str, ip: str | None) -> bytes:
    q = _dns_name(name) + struct.pack("!HH", 1, 1)
    if ip is None:  # NXDOMAIN
        return struct.pack("!HHHHHH", txid, 0x8183, 1, 0, 0, 0) + q
    ans = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes(int(x) for x in ip.split("."))
    return struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0) + q + ans


def mdns_announce(hostname: str, service: str) -> bytes:
    rr = _dns_name(service) + struct.pack("!HHIH", 12, 0x8001, 4500, len(_dns_name(hostname)))
    rr += _dns_name(hostname)
    return struct.pack("!HHHHHH", 0, 0x8400, 0, 1, 0, 0) + rr


def dhcp_request(xid: int, mac: str, hostname: str, ciaddr: bytes = b"\0" * 4) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")) + b"\0" * 10
    bootp = struct.pack("!BBBBIHH4s4s4s4s", 1, 1, 6, 0, xid, 0, 0, ciaddr, b"\0" * 4,
                        b"\0" * 4, b"\0" * 4) + chaddr + b"\0" * 192
    opts = b"\x63\x82\x53\x63" + b"\x35\x01\x03" + bytes([12, len(hostname)]) + hostname.encode()
    opts += b"\x37\x04\x01\x03\x06\x0f\xff"
    return bootp + opts


def ntp_packet(mode: int) -> bytes:
    return bytes([0x20 | mode]) + b"\x00\x06\xec" + b"\0" * 44


def tls_client_hello(sni: str, rng: np.random.Generator) -> bytes:
    name = sni.encode()
    sni_ext = struct.pack("!HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    exts = sni_ext + bytes.fromhex("000a00080006001d00170018" "000b00020100"
                                   "000d000e000c040305030603080408050806"
                                   "002b0003020303")
    ciphers = bytes.fromhex("c02bc02fc02cc030cca9cca8c013c014009c009d002f0035")
    body = (b"\x03\x03" + rng.bytes(32) + b"\x00" + struct.pack("!H", len(ciphers)) + ciphers
            + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def tls_server_hello(rng: np.random.Generator) -> bytes:
    body = b"\x03\x03" + rng.bytes(32) + b"\x00" + b"\xc0\x2f" + b"\x00" + b"\x00\x00"
    hs = b"\x02" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs


def tls_app_data(n: int, rng: np.random.Generator) -> bytes:
    return b"\x17\x03\x03" + struct.pack("!H", n) + rng.bytes(n)


def mqtt_connect(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(cid)) + cid
    return b"\x10" + bytes([len(var)]) + var


def mqtt_publish(topic: str, payload: bytes) -> bytes:
    t = topic.encode()
    var = struct.pack("!H", len(t)) + t + payload
    return b"\x30" + bytes([len(var)]) + var


def modbus_read(tid: int, unit: int = 1, addr: int = 0, count: int = 10) -> bytes:
    return struct.pack("!HHHBBHH", tid, 0, 6, unit, 3, addr, count)


def modbus_read_resp(tid: int, rng: np.random.Generator, count: int = 10, unit: int = 1) -> bytes:
    data = rng.integers(0, 65535, count, dtype=np.uint16).astype(">u2").tobytes()
    return struct.pack("!HHHBBB", tid, 0, 3 + len(data), unit, 3, len(data)) + data


def modbus_write(tid: int, addr: int, values: Sequence[int], unit: int = 1) -> bytes:
    data = b"".join(struct.pack("!H", v & 0xFFFF) for v in values)
    pdu = struct.pack("!BHHB", 16, addr, len(values), len(data)) + data
    return struct.pack("!HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def modbus_write_resp(tid: int, addr: int, n: int, unit: int = 1) -> bytes:
    return struct.pack("!HHHBBHH", tid, 0, 6, unit, 16, addr, n)


def _tpkt(payload: bytes) -> bytes:
    return b"\x03\x00" + struct.pack("!H", len(payload) + 4) + payload


S7_COTP_CR = _tpkt(bytes.fromhex("11e00000000100c0010ac1020100c2020102"))
S7_COTP_CC = _tpkt(bytes.fromhex("11d00001000100c0010ac1020100c2020102"))
S7_SETUP = _tpkt(bytes.fromhex("02f080" "32010000000000080000f0000001000101e0"))
S7_SETUP_ACK = _tpkt(bytes.fromhex("02f080" "320300000000000800000000f0000001000100f0"))
# read var of 2 bytes of DB1 at byte 0, and its answer: a job header of 10 bytes (protocol id,
# ROSCTR 1, reserved, PDU reference, parameter and data lengths), an ack-data header of 12
# (with error class and code 0)
S7_READ = _tpkt(bytes.fromhex("02f080" "32010000" "0100" "000e" "0000"
                              "0401120a10020002000184000000"))
S7_READ_ACK = _tpkt(bytes.fromhex("02f080" "32030000" "0100" "0002" "0006" "0000"
                                  "0401" "ff0400100000"))


def snmp_get(community: str = "public") -> bytes:
    c = community.encode()
    oid = bytes.fromhex("06082b06010201010100")
    varbind = b"\x30" + bytes([len(oid) + 2]) + oid + b"\x05\x00"
    vbl = b"\x30" + bytes([len(varbind)]) + varbind
    pdu_body = bytes.fromhex("020101" "020100" "020100") + vbl
    pdu = b"\xa0" + bytes([len(pdu_body)]) + pdu_body
    body = b"\x02\x01\x01" + b"\x04" + bytes([len(c)]) + c + pdu
    return b"\x30" + bytes([len(body)]) + body


def snmp_response(community: str = "public") -> bytes:
    q = bytearray(snmp_get(community))
    q[q.index(0xA0)] = 0xA2
    return bytes(q) + b"HP LaserJet"


def sip_register(phone: Host, pbx: Host, cseq: int, ext: int) -> bytes:
    return (
        f"REGISTER sip:{pbx.ip} SIP/2.0\r\nVia: SIP/2.0/UDP {phone.ip}:5060;"
        f"branch=z9hG4bK{cseq:06d}"
        f"\r\nMax-Forwards: 70\r\nFrom: <sip:{ext}@{pbx.ip}>;tag={ext}{cseq}\r\n"
        f"To: <sip:{ext}@{pbx.ip}>\r\nCall-ID: {ext}-{cseq}@{phone.ip}\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{ext}@{phone.ip}:5060>\r\nUser-Agent: Desk Phone\r\nExpires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sip_ok(method: str, cseq: int) -> bytes:
    return f"SIP/2.0 200 OK\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n".encode()


def sip_invite(phone: Host, pbx: Host, cseq: int, ext: int, callee: int) -> bytes:
    sdp = (f"v=0\r\no=- {cseq} 1 IN IP4 {phone.ip}\r\ns=call\r\nc=IN IP4 {phone.ip}\r\nt=0 0\r\n"
           "m=audio 16384 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    return (
        f"INVITE sip:{callee}@{pbx.ip} SIP/2.0\r\nVia: SIP/2.0/UDP {phone.ip}:5060;branch=z9hG4bK"
        f"i{cseq}\r\nFrom: <sip:{ext}@{pbx.ip}>;tag=i{cseq}\r\nTo: <sip:{callee}@{pbx.ip}>\r\n"
        f"Call-ID: call-{ext}-{cseq}\r\nCSeq: {cseq} INVITE\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def rtp_packet(seq: int, ts: int, ssrc: int, rng: np.random.Generator) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + rng.bytes(160)

"""The payload pass (features/payload.py) and its dissectors (features/banners.py,
features/tls.py): conversations the tests write as pcaps and read through ``read_capture``
(real NFStream), credentials that must never be stored, segmentation of long connections,
malformed payloads, and golden entries of the shared captures."""

from __future__ import annotations

import base64
import datetime as dt
import struct
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from flockwatch.features import flows as flows_module
from flockwatch.features import payload as payload_module
from flockwatch.features import read_capture
from flockwatch.features.banners import (
    Ftp,
    Http,
    Imap,
    Mqtt,
    Pop3,
    Snmp,
    Ssh,
    Telnet,
    mqtt_connect_password,
    snmp_version,
    strip_telnet,
)
from flockwatch.features.payload import (
    SEGMENT_SCHEMA,
    attach_payload,
    clean_entry,
    dissectors,
    scan_capture,
)
from flockwatch.features.schema import EXTRACTION_VERSION, FLOW_SCHEMA
from flockwatch.features.tls import Tls, certificate_entry, server_hello_version

CLIENT = ("02:00:00:00:00:0a", "192.168.1.10")
SERVER = ("02:00:00:00:00:0b", "192.168.1.20")
T0 = 1_772_438_400.0
SECRET = "hunter2-Sw0rdfish"


class Conversation:
    """A TCP connection written packet by packet: handshake, data both ways, close."""

    def __init__(self, w: PcapWriter, port: int, *, cport: int = 40000, t: float = T0,
                 client: tuple[str, str] = CLIENT, server: tuple[str, str] = SERVER,
                 handshake: bool = True) -> None:
        self.w, self.port, self.cport, self.t = w, port, cport, t
        self.c, self.s = client, server
        self.seq = {True: 1000, False: 5000}
        if handshake:
            self._send(True, TCP_SYN)
            self._send(False, TCP_SYN | TCP_ACK)
            self._send(True, TCP_ACK)

    def _send(self, to_server: bool, flags: int, data: bytes = b"", dt_s: float = 0.01) -> None:
        a, b = (self.c, self.s) if to_server else (self.s, self.c)
        sp, dp = (self.cport, self.port) if to_server else (self.port, self.cport)
        self.t += dt_s
        seg = tcp(a[1], b[1], sp, dp, self.seq[to_server], self.seq[not to_server], flags, data)
        self.w.add(self.t, ethernet(a[0], b[0], ipv4(a[1], b[1], 6, seg)))
        self.seq[to_server] += len(data) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)

    def client(self, data: bytes, dt_s: float = 0.01) -> Conversation:
        self._send(True, TCP_PSH | TCP_ACK, data, dt_s)
        return self

    def server(self, data: bytes, dt_s: float = 0.01) -> Conversation:
        self._send(False, TCP_PSH | TCP_ACK, data, dt_s)
        return self

    def close(self) -> None:
        self._send(True, TCP_FIN | TCP_ACK)
        self._send(False, TCP_FIN | TCP_ACK)
        self._send(True, TCP_ACK)


def udp_packet(w: PcapWriter, t: float, a: tuple[str, str], b: tuple[str, str], sport: int,
               dport: int, data: bytes) -> None:
    w.add(t, ethernet(a[0], b[0], ipv4(a[1], b[1], 17, udp(a[1], b[1], sport, dport, data))))


def payload_of(path: Path) -> pl.DataFrame:
    flows, _ = read_capture(path)
    return flows.filter(pl.col("payload").is_not_null())


def entries(flows: pl.DataFrame) -> set[str]:
    return {e for p in flows["payload"].to_list() for e in p.split("\n")}


def no_secret_anywhere(flows: pl.DataFrame, *secrets: str) -> None:
    text = str(flows.to_dicts())
    for s in secrets:
        assert s not in text
        assert base64.b64encode(s.encode()).decode() not in text


# --- the conversations, through read_capture (real NFStream) ---------------------------------


def test_http_server_user_agent_and_basic_login(tmp_path):
    w = PcapWriter()
    token = base64.b64encode(f"admin:{SECRET}".encode()).decode()
    (Conversation(w, 80)
     .client(b"GET /cgi-bin/status HTTP/1.1\r\nHost: cam\r\nUser-Agent: curl/7.68.0\r\n"
             b"Authorization: Basic " + token.encode() + b"\r\n\r\n")
     .server(b"HTTP/1.1 200 OK\r\nServer: lighttpd/1.4.35\r\nContent-Length: 2\r\n\r\nok")
     .close())
    path = tmp_path / "http.pcap"
    w.write(path)
    flows = payload_of(path)
    assert flows.height == 1
    assert flows["payload"][0].split("\n") == [
        "<http_server=lighttpd/1.4.35", ">cleartext_login=http_basic",
        ">http_user_agent=curl/7.68.0"]
    no_secret_anywhere(flows, SECRET, token, "admin")


def test_ssh_banners_of_both_ends(tmp_path):
    w = PcapWriter()
    (Conversation(w, 22).server(b"SSH-2.0-dropbear_2019.78\r\n")
     .client(b"SSH-2.0-OpenSSH_8.4p1 Debian-5\r\n").client(b"\x00\x00\x01\x2c\x0a\x14" * 10)
     .close())
    path = tmp_path / "ssh.pcap"
    w.write(path)
    assert entries(payload_of(path)) == {"<ssh_banner=SSH-2.0-dropbear_2019.78",
                                         ">ssh_banner=SSH-2.0-OpenSSH_8.4p1 Debian-5"}


def test_ftp_banner_and_login_but_not_anonymous(tmp_path):
    w = PcapWriter()
    (Conversation(w, 21).server(b"220 (vsFTPd 3.0.3)\r\n").client(b"USER admin\r\n")
     .server(b"331 Please specify the password.\r\n").client(f"PASS {SECRET}\r\n".encode())
     .server(b"230 Login successful.\r\n").close())
    (Conversation(w, 21, cport=40001, t=T0 + 10).server(b"220-ProFTPD 1.3.5 Server\r\n")
     .client(b"USER anonymous\r\n").client(b"PASS guest@\r\n").close())
    path = tmp_path / "ftp.pcap"
    w.write(path)
    flows = payload_of(path).sort("src_port")
    assert flows["payload"].to_list() == [
        "<ftp_banner=(vsFTPd 3.0.3)\n>cleartext_login=ftp",
        "<ftp_banner=ProFTPD 1.3.5 Server"]
    no_secret_anywhere(flows, SECRET, "admin")


def telnet_login(w: PcapWriter, port: int = 23) -> None:
    iac = bytes([255, 253, 24, 255, 253, 32, 255, 251, 1])  # DO TTYPE, DO TSPEED, WILL ECHO
    c = Conversation(w, port).server(iac).client(bytes([255, 252, 24, 255, 252, 32]))
    c.server(b"\r\nBusyBox v1.19.4 (2015-03-04) built-in shell\r\n\r\nipcam login: ")
    for ch in b"root\r":
        c.client(bytes([ch])).server(bytes([ch]))
    c.server(b"\r\nPassword: ")
    for ch in SECRET.encode() + b"\r":
        c.client(bytes([ch]))
    c.server(b"\r\n\r\n# ").close()


def test_telnet_banner_after_negotiation_and_login(tmp_path):
    w = PcapWriter()
    telnet_login(w, 2323)
    path = tmp_path / "telnet.pcap"
    w.write(path)
    flows = payload_of(path)
    assert flows["payload"].to_list() == [
        "<telnet_banner=BusyBox v1.19.4 (2015-03-04) built-in shell\n>cleartext_login=telnet"]
    no_secret_anywhere(flows, SECRET)


def test_telnet_prompt_without_answer_is_no_login(tmp_path):
    w = PcapWriter()
    Conversation(w, 23).server(b"login: ").client(b"root\r\n").server(b"Password: ").close()
    path = tmp_path / "telnet.pcap"
    w.write(path)
    assert payload_of(path).height == 0


def test_mail_logins(tmp_path):
    w = PcapWriter()
    (Conversation(w, 110).server(b"+OK POP3 ready\r\n").client(b"USER alice\r\n")
     .server(b"+OK\r\n").client(f"PASS {SECRET}\r\n".encode()).close())
    (Conversation(w, 143, cport=40001).server(b"* OK IMAP4rev1\r\n")
     .client(f'a1 LOGIN alice "{SECRET}"\r\n'.encode()).close())
    path = tmp_path / "mail.pcap"
    w.write(path)
    flows = payload_of(path).sort("dst_port")
    assert flows["payload"].to_list() == [">cleartext_login=pop3", ">cleartext_login=imap"]
    no_secret_anywhere(flows, SECRET, "alice")


def tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def handshake(mtype: int, body: bytes) -> bytes:
    return bytes([mtype]) + len(body).to_bytes(3, "big") + body


def server_hello(version: int = 0x0303, tls13: bool = False) -> bytes:
    ext = b""
    if tls13:
        ext = struct.pack("!HHH", 43, 2, 0x0304)
    body = struct.pack("!H", version) + b"\x11" * 32 + b"\x00" + b"\x13\x01" + b"\x00"
    body += struct.pack("!H", len(ext)) + ext
    return handshake(2, body)


def make_certificate(cn: str, *, self_signed: bool, expired: bool = False) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = key if self_signed else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme; Devices")])
    issuer = name if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                                     "Acme CA")])
    start = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2016 if expired else 2099, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(7).not_valid_before(start)
            .not_valid_after(end).sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_message(der: bytes) -> bytes:
    one = len(der).to_bytes(3, "big") + der
    return handshake(11, len(one).to_bytes(3, "big") + one)


def test_tls_version_and_certificate_split_over_segments(tmp_path):
    der = make_certificate("cam.local", self_signed=True, expired=True)
    flight = tls_record(22, server_hello(0x0301) + certificate_message(der)
                        + handshake(14, b""), 0x0301)
    w = PcapWriter()
    c = Conversation(w, 443).client(tls_record(22, handshake(1, b"\x03\x01" + b"\0" * 40)))
    for i in range(0, len(flight), 200):  # the server's flight in small segments
        c.server(flight[i:i + 200])
    c.close()
    c13 = Conversation(w, 8443, cport=40001).client(tls_record(22, handshake(1, b"\x03\x03")))
    c13.server(tls_record(22, server_hello(0x0303, tls13=True)) + tls_record(23, b"x" * 50))
    c13.close()
    path = tmp_path / "tls.pcap"
    w.write(path)
    flows = payload_of(path).sort("dst_port")
    assert flows["payload"].to_list() == [
        "<tls_cert=subject=O=Acme\\, Devices,CN=cam.local;issuer=O=Acme\\, Devices,CN=cam.local;"
        "not_before=2015-01-01T00:00:00Z;not_after=2016-01-01T00:00:00Z;self_signed=1\n"
        "<tls_version=TLS1.0",
        "<tls_version=TLS1.3"]


def test_certificate_not_self_signed_and_garbage():
    der = make_certificate("printer", self_signed=False)
    assert certificate_entry(der) == (
        "tls_cert=subject=O=Acme\\, Devices,CN=printer;issuer=CN=Acme CA;"
        "not_before=2015-01-01T00:00:00Z;not_after=2099-01-01T00:00:00Z;self_signed=0")
    assert certificate_entry(der[:100]) is None
    assert certificate_entry(b"") is None


def test_snmp_and_mqtt_logins(tmp_path):
    w = PcapWriter()
    v1 = bytes.fromhex("302602010004067075626c6963a019020101020100020100300e300c06082b060102"
                       "010101000500")
    v2 = bytearray(v1)
    v2[4] = 1
    udp_packet(w, T0, CLIENT, SERVER, 50000, 161, v1)
    udp_packet(w, T0 + 1, CLIENT, SERVER, 50001, 161, bytes(v2))
    connect = bytes.fromhex("101c00044d5154540402003c0004636c6965") + b"\x00\x00"
    flags_at = 9
    with_password = bytearray(connect)
    with_password[flags_at] = 0xC2
    Conversation(w, 1883, t=T0 + 2).client(bytes(with_password)).close()
    Conversation(w, 1883, cport=40001, t=T0 + 3).client(connect).close()
    path = tmp_path / "snmp_mqtt.pcap"
    w.write(path)
    flows = payload_of(path).sort("first_seen")
    assert flows["payload"].to_list() == [">cleartext_login=snmp_v1",
                                          ">cleartext_login=snmp_v2c",
                                          ">cleartext_login=mqtt"]
    no_secret_anywhere(flows, "public")


def test_snmp_trap_from_port_161(tmp_path):
    """An agent sending its trap from 161 to a manager's 162 is the flow's server by the
    lower-port rule; its community still counts, as the agent's."""
    pdu = bytes.fromhex("020101020100020100") + b"\x30\x00"  # ids, no variables
    body = b"\x02\x01\x01\x04\x07private\xa7" + bytes([len(pdu)]) + pdu
    trap = b"\x30" + bytes([len(body)]) + body
    w = PcapWriter()
    udp_packet(w, T0, SERVER, CLIENT, 161, 162, trap)
    path = tmp_path / "trap.pcap"
    w.write(path)
    flows = payload_of(path)
    assert flows["src_ip"].to_list() == [SERVER[1]]
    assert flows["payload"].to_list() == [">cleartext_login=snmp_v2c"]
    no_secret_anywhere(flows, "private")


def test_reply_first_flow_keeps_the_senders_right(tmp_path):
    """A capture that starts with the server's packet: ``orient`` flips the flow, and the
    server's entry must still be marked as sent by the flow's dst."""
    w = PcapWriter()
    c = Conversation(w, 80, handshake=False)  # the capture starts mid-connection
    c.server(b"HTTP/1.1 200 OK\r\nServer: Roku/9.10 UPnP/1.0 Roku/9.10\r\n\r\n")
    c.client(b"GET / HTTP/1.1\r\nUser-Agent: Roku/DVP-9.10\r\n\r\n").close()
    path = tmp_path / "http.pcap"
    w.write(path)
    flows = payload_of(path)
    assert flows["src_ip"][0] == CLIENT[1]
    assert flows["payload"][0] == ("<http_server=Roku/9.10 UPnP/1.0 Roku/9.10\n"
                                   ">http_user_agent=Roku/DVP-9.10")


def test_long_connection_split_by_active_timeout(tmp_path):
    """NFStream cuts a connection at the active timeout; each piece gets its own
    dissector, so the entries land on the flow in which they were sent."""
    w = PcapWriter()
    c = Conversation(w, 80)
    c.client(b"GET /a HTTP/1.1\r\nUser-Agent: first/1.0\r\n\r\n")
    c.server(b"HTTP/1.1 200 OK\r\nServer: early/1.0\r\n\r\n")
    for _ in range(20):  # keep-alive polling, every 100 s, past the 1800 s active timeout
        c.client(b"GET /poll HTTP/1.1\r\n\r\n", dt_s=100).server(b"HTTP/1.1 204 No\r\n\r\n")
    c.client(b"GET /b HTTP/1.1\r\nUser-Agent: second/2.0\r\n\r\n")
    c.server(b"HTTP/1.1 200 OK\r\nServer: late/2.0\r\n\r\n").close()
    path = tmp_path / "long.pcap"
    w.write(path)
    flows, _ = read_capture(path, active_timeout=1800)
    flows = flows.sort("first_seen")
    assert flows.height == 2
    assert flows["payload"].to_list() == ["<http_server=early/1.0\n>http_user_agent=first/1.0",
                                          "<http_server=late/2.0\n>http_user_agent=second/2.0"]


def test_same_ports_later_connection_after_idle_gap(tmp_path):
    w = PcapWriter()
    (Conversation(w, 22).server(b"SSH-2.0-OpenSSH_7.4\r\n").close())
    (Conversation(w, 22, t=T0 + 600).server(b"SSH-2.0-OpenSSH_9.6\r\n").close())
    path = tmp_path / "ssh.pcap"
    w.write(path)
    flows = payload_of(path).sort("first_seen")
    assert flows["payload"].to_list() == ["<ssh_banner=SSH-2.0-OpenSSH_7.4",
                                          "<ssh_banner=SSH-2.0-OpenSSH_9.6"]


def test_packet_cap_per_direction(tmp_path):
    """Past ``cap`` payload packets a direction is no longer looked at."""
    w = PcapWriter()
    c = Conversation(w, 80)
    for _ in range(Http.cap or 0):
        c.client(b"GET / HTTP/1.1\r\n\r\n")
    c.client(b"GET / HTTP/1.1\r\nUser-Agent: too-late/1.0\r\n\r\n").close()
    path = tmp_path / "cap.pcap"
    w.write(path)
    assert scan_capture(path).segments.height == 0


def test_payload_off_and_zeek_leave_nulls(tmp_path):
    w = PcapWriter()
    Conversation(w, 22).server(b"SSH-2.0-OpenSSH_7.4\r\n").close()
    path = tmp_path / "ssh.pcap"
    w.write(path)
    flows, _ = read_capture(path, payload=False)
    assert flows["payload"].null_count() == flows.height
    assert flows.schema == FLOW_SCHEMA
    assert EXTRACTION_VERSION == 4


def test_timeouts_are_the_flow_readers():
    """One definition of NFStream's flow cuts: the payload pass cuts connections where the
    flow readers do."""
    assert payload_module.IDLE_TIMEOUT_S is flows_module.IDLE_TIMEOUT_S == 120
    assert payload_module.ACTIVE_TIMEOUT_S is flows_module.ACTIVE_TIMEOUT_S == 1800


def test_registry_and_industrial_merge(monkeypatch, tmp_path):
    """``features.ot.OT_DISSECTORS`` joins the registry; a dissector's columns fill the flow
    columns it names, and one that raises costs its own flow only."""
    reg = dissectors()
    assert reg[6, 80] is Http and reg[6, 443] is Tls and reg[17, 161] is Snmp
    assert reg[6, 22] is Ssh and reg[6, 23] is Telnet and reg[6, 21] is Ftp
    assert reg[6, 110] is Pop3 and reg[6, 143] is Imap and reg[6, 1883] is Mqtt

    class Broken:
        cap = None

        def packet(self, t_ms: int, payload: bytes, to_server: bool) -> None:
            raise RuntimeError("bug")

        def entries(self):
            return [(True, "never")]

        def columns(self) -> dict[str, object]:
            return {}

    monkeypatch.setitem(payload_module.OT_DISSECTORS, (6, 80), Broken)
    w = PcapWriter()
    Conversation(w, 80).client(b"GET / HTTP/1.0\r\n\r\n").close()
    Conversation(w, 22, cport=40001).server(b"SSH-2.0-x\r\n").close()
    path = tmp_path / "mix.pcap"
    w.write(path)
    seg = scan_capture(path).segments
    assert seg["server_entries"].to_list() == ["ssh_banner=SSH-2.0-x"]


def test_attach_payload_columns_and_orientation():
    flows = pl.DataFrame({
        "protocol": [6, 6, 17], "src_ip": ["10.0.0.1", "10.0.0.2", "10.0.0.1"],
        "src_port": [40000, 80, 5000], "dst_ip": ["10.0.0.2", "10.0.0.1", "10.0.0.2"],
        "dst_port": [80, 40001, 161],
        "first_seen": [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 3,
        "last_seen": [dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)] * 3,
        "payload": pl.Series([None] * 3, dtype=pl.String),
    })
    t = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    no_ot = (None,) * (len(SEGMENT_SCHEMA) - 9)  # the industrial columns (features.ot)
    seg = pl.DataFrame([
        (6, "10.0.0.1", 40000, "10.0.0.2", 80, t, t + 10, "http_user_agent=a",
         "http_server=b\nhttp_server=d", *no_ot),
        (6, "10.0.0.1", 40001, "10.0.0.2", 80, t, t + 10, None, "http_server=c", *no_ot),
    ], schema=SEGMENT_SCHEMA, orient="row")
    out = attach_payload(flows, seg)
    assert out["payload"].to_list() == ["<http_server=b\n<http_server=d\n>http_user_agent=a",
                                        ">http_server=c", None]


def test_clean_entry():
    assert clean_entry("http_server=  Boa\x00/0.94\r\n ") == "http_server=Boa/0.94"
    assert clean_entry("ssh_banner=" + "x" * 300) == "ssh_banner=" + "x" * 200
    assert clean_entry("http_server= \x01 ") is None
    assert clean_entry("nonsense") is None


# --- the parsers on their own -----------------------------------------------------------------


def test_parser_units():
    assert server_hello_version(server_hello(0x0303)[4:]) == "TLS1.2"
    assert server_hello_version(server_hello(0x0303, tls13=True)[4:]) == "TLS1.3"
    assert server_hello_version(server_hello(0x0300)[4:]) == "SSLv3"
    assert server_hello_version(b"\x03") is None
    assert strip_telnet(bytes([255, 251, 1, 65, 255, 255, 66, 255, 250, 24, 1, 255, 240, 67])
                        ) == b"A\xffBC"
    assert snmp_version(bytes.fromhex("3003020103")) == 3
    assert snmp_version(b"\x30\x05\x02\x01\x01\x04\x00") == 1
    assert snmp_version(b"\x30") is None
    assert mqtt_connect_password(b"\x10\x0c\x00\x04MQTT\x04\x40\x00\x3c") is True
    assert mqtt_connect_password(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c") is False
    assert mqtt_connect_password(b"\x30\x00") is None


PARSERS = (Http, Ssh, Ftp, Telnet, Pop3, Imap, Mqtt, Snmp, Tls)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=300)), max_size=12),
       st.sampled_from(PARSERS))
def test_malformed_payloads_never_raise(packets, parser):
    d = parser()
    for i, (to_server, data) in enumerate(packets):
        d.packet(i, data, to_server)
    for by_server, entry in d.entries():
        assert isinstance(by_server, bool) and "=" in entry
    assert isinstance(d.columns(), dict)


# --- golden entries of the shared captures ---------------------------------------------------


def test_golden_shared_captures(shared_data):
    cases = {
        "ics-protocols/mqtt/emreekin__MQTT_mqtt_user_credentials.pcap":
            {">cleartext_login=mqtt"},
        "ics-protocols/snmp/emreekin__SNMP_SNMPv2c_get_requests.pcap":
            {">cleartext_login=snmp_v2c"},
        "protocol-samples/snmp/zeek__snmp_snmpv1_trap.pcap": {">cleartext_login=snmp_v1"},
        "ics-protocols/snmp/emreekin__SNMP_SNMPv3.pcap": set(),
        # the D-Link camera of IoT Sentinel: its cloud's certificate over TLS 1.0, and the
        # setup app's SOAP client (the camera's own responses carry no Server header)
        "iot-sentinel/D-LinkCam/Setup-A-1-STA.pcap": {
            ">http_user_agent=ksoap2-android/2.6.0+",
            "<tls_cert=subject=CN=*.auto.mydlink.com,O=D-Link Corporation,OU=IT D;"
            "issuer=CN=GlobalSign Organization Validation CA - SHA256;"
            "not_before=2015-05-07T06:52:23Z;not_after=2017-09-22T08:22:05Z;self_signed=0",
            "<tls_version=TLS1.0"},
    }
    for rel, want in cases.items():
        path = shared_data / rel
        if not path.exists():
            pytest.skip(f"{rel} not in the shared data")
        assert entries(payload_of(path)) == want, rel


def _verdicts_agree(path: Path) -> None:
    from flockwatch.features.captures import inspect_capture
    from flockwatch.features.errors import InputError
    from flockwatch.features.payload import inspect_and_scan

    try:
        want = inspect_capture(path)
    except InputError as exc:
        with pytest.raises(InputError) as got:
            inspect_and_scan(path)
        assert got.value.problem == exc.problem
        return
    info, scan = inspect_and_scan(path)
    assert info == want, path
    assert scan.segments.equals(scan_capture(path).segments)


def test_one_walk_gives_the_inspection_verdict(tmp_path):
    """``read_capture`` takes the framing verdict of a classic pcap from the payload pass's
    walk: it must be ``inspect_capture``'s, on the hostile captures of the fuzz corpus (cut,
    huge, odd times, pcapng) too."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
    from hostile import CAPTURE_CORPUS

    for i, build in enumerate(CAPTURE_CORPUS.values()):
        case = build()
        path = tmp_path / f"{i}{case.suffix}"
        path.write_bytes(case.data)
        _verdicts_agree(path)
    w = PcapWriter()
    telnet_login(w)
    w.write(tmp_path / "telnet.pcap")
    _verdicts_agree(tmp_path / "telnet.pcap")


def test_one_walk_on_shared_captures(shared_data):
    paths = sorted((shared_data / "ics-protocols").rglob("*.pcap"))[:40] + sorted(
        (shared_data / "protocol-samples").rglob("*.pcap"))[:40]
    if not paths:
        pytest.skip("no shared pcaps")
    for path in paths:
        _verdicts_agree(path)


def test_no_secret_anywhere_in_the_flow_table(tmp_path):
    """Every kind of clear-text login in one capture: each is reported, and none of the
    secrets (passwords, the community string, user names) is anywhere in the table."""
    w = PcapWriter()
    token = base64.b64encode(f"admin:{SECRET}".encode())
    Conversation(w, 8080, cport=41000).client(
        b"GET / HTTP/1.1\r\nAuthorization: Basic " + token + b"\r\n\r\n").close()
    (Conversation(w, 21, cport=41001).server(b"220 ready\r\n").client(b"USER admin\r\n")
     .client(f"PASS {SECRET}\r\n".encode()).close())
    (Conversation(w, 110, cport=41002).client(b"USER admin\r\n")
     .client(f"PASS {SECRET}\r\n".encode()).close())
    Conversation(w, 143, cport=41003).client(f"a LOGIN admin {SECRET}\r\n".encode()).close()
    user, pw = b"admin", SECRET.encode()
    body = (b"\x00\x04MQTT\x04\xc2\x00\x3c\x00\x02id" + struct.pack("!H", len(user)) + user
            + struct.pack("!H", len(pw)) + pw)
    Conversation(w, 1883, cport=41004).client(b"\x10" + bytes([len(body)]) + body).close()
    community = b"s3cret-community"
    pdu = bytes.fromhex("a019020101020100020100300e300c06082b060102010101000500")
    inner = b"\x02\x01\x01\x04" + bytes([len(community)]) + community + pdu
    udp_packet(w, T0 + 5, CLIENT, SERVER, 41005, 161, b"\x30" + bytes([len(inner)]) + inner)
    telnet_login(w)
    path = tmp_path / "logins.pcap"
    w.write(path)
    flows, _ = read_capture(path)
    assert {e for e in entries(flows.filter(pl.col("payload").is_not_null()))
            if "cleartext_login" in e} == {
        f">cleartext_login={how}" for how in
        ("http_basic", "ftp", "pop3", "imap", "mqtt", "snmp_v2c", "telnet")}
    no_secret_anywhere(flows, SECRET, token.decode(), "admin", "s3cret-community")


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns)


def test_announcements_of_the_one_pass_equal_their_own_pass(shared_data, tmp_path):
    """The payload pass gives the announcements ``read_announcements`` gives, on real
    captures and on every framing of test_announce (QinQ, SLL, SLL2, raw IP, IPv6,
    pcapng)."""
    from flockwatch.features.announce import read_announcements

    paths = sorted((shared_data / "iot-sentinel").rglob("Setup-A-1-STA.pcap"))[:12] + sorted(
        (shared_data / "protocol-samples" / "discovery_ssdp_upnp_mdns").rglob("*.pcap*"))
    import test_announce as ta

    v4 = ipv4(ta.DEV[1], ta.MDNS[1], 17, udp(ta.DEV[1], ta.MDNS[1], 5353, 5353,
                                             ta.mdns_answer()))
    v6 = ta.ipv6_udp("fe80::217:88ff:fe24:76ff", "ff02::fb", 5353, 5353, ta.mdns_answer())
    for name, (linktype, frame) in {
        "qinq": (1, ta.udp_frame(ta.DEV, ta.SSDP, 1900, 1900, ta.NOTIFY, vlans=(100, 7))),
        "vlan": (1, ta.udp_frame(ta.DEV, ta.SSDP, 1900, 1900, ta.NOTIFY, vlans=(100,))),
        "sll": (113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + v4),
        "sll2": (276, struct.pack("!HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, b"\0" * 8) + v6),
        "raw": (101, v4),
        "ipv6eth": (1, ethernet(ta.DEV[0], "33:33:00:00:00:fb", v6, ethertype=0x86DD)),
    }.items():
        w = PcapWriter(linktype=linktype)
        w.add(T0, frame)
        w.write(tmp_path / f"{name}.pcap")
        paths.append(tmp_path / f"{name}.pcap")
    for path in paths:
        want = read_announcements(path)
        got = scan_capture(path).announcements
        assert _sorted(got).equals(_sorted(want)), path
    assert scan_capture(tmp_path / "qinq.pcap").announcements.height > 0


def ipv6_tcp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    import socket

    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, TCP_PSH | TCP_ACK, 1024, 0,
                      0) + payload
    return (struct.pack("!IHBB", 0x60000000, len(seg), 6, 64)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + seg)


def test_payload_over_ipv6_vlans_and_cooked_captures(tmp_path):
    request = b"GET / HTTP/1.1\r\nUser-Agent: six/1.0\r\n\r\n"
    v6 = ipv6_tcp("fd00::10", "fd00::20", 40000, 80, request)
    v4 = ipv4(CLIENT[1], SERVER[1], 6, tcp(CLIENT[1], SERVER[1], 40000, 80, 1, 1,
                                          TCP_PSH | TCP_ACK, request))
    tag = struct.pack("!HH", 100, 0x0800)
    cases = {
        "ipv6": (1, ethernet(CLIENT[0], SERVER[0], v6, ethertype=0x86DD)),
        "vlan": (1, ethernet(CLIENT[0], SERVER[0], tag + v4, ethertype=0x8100)),
        "qinq": (1, ethernet(CLIENT[0], SERVER[0], struct.pack("!HH", 7, 0x8100) + tag + v4,
                             ethertype=0x88A8)),
        "sll": (113, struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800) + v4),
        "raw": (101, v4),
        "padded": (1, ethernet(CLIENT[0], SERVER[0], v4 + b"\0" * 30)),
    }
    for name, (linktype, frame) in cases.items():
        w = PcapWriter(linktype=linktype)
        w.add(T0, frame)
        w.write(tmp_path / f"{name}.pcap")
        seg = scan_capture(tmp_path / f"{name}.pcap").segments
        assert seg["client_entries"].to_list() == ["http_user_agent=six/1.0"], name
    six = scan_capture(tmp_path / "ipv6.pcap").segments.row(0, named=True)
    assert (six["client_ip"], six["server_ip"], six["server_port"]) == ("fd00::10", "fd00::20",
                                                                        80)

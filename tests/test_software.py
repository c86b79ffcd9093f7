"""Software per device (features/software.py): the normalisation table, CPE names, which
device an entry belongs to, and the software of real devices of the shared captures."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from test_payload import CLIENT, SERVER, Conversation

from flockwatch.datasets.pcap import PcapWriter
from flockwatch.features import read_capture
from flockwatch.features.attribution import attribute
from flockwatch.features.software import (
    SOFTWARE_SCHEMA,
    cpe_name,
    device_software,
    normalise,
)

CASES = [
    ("ssh_banner", "SSH-2.0-OpenSSH_8.4p1 Debian-5",
     [("software", "openbsd", "openssh", "8.4p1",
       "cpe:2.3:a:openbsd:openssh:8.4p1:*:*:*:*:*:*:*")]),
    ("ssh_banner", "SSH-2.0-dropbear_2019.78",
     [("software", "dropbear_ssh_project", "dropbear_ssh", "2019.78",
       "cpe:2.3:a:dropbear_ssh_project:dropbear_ssh:2019.78:*:*:*:*:*:*:*")]),
    ("ssh_banner", "SSH-2.0-libssh_0.9.6", [("software", None, "libssh", "0.9.6", None)]),
    ("http_server", "Apache/2.4.41 (Ubuntu) OpenSSL/1.1.1f",
     [("software", "apache", "http_server", "2.4.41",
       "cpe:2.3:a:apache:http_server:2.4.41:*:*:*:*:*:*:*"),
      ("software", "openssl", "openssl", "1.1.1f",
       "cpe:2.3:a:openssl:openssl:1.1.1f:*:*:*:*:*:*:*")]),
    ("http_server", "lighttpd/1.4.35",
     [("software", "lighttpd", "lighttpd", "1.4.35",
       "cpe:2.3:a:lighttpd:lighttpd:1.4.35:*:*:*:*:*:*:*")]),
    ("http_server", "nginx", [("software", "f5", "nginx", None, None)]),
    ("http_server", "Boa/0.94.14rc21",
     [("software", "boa", "boa", "0.94.14rc21", "cpe:2.3:a:boa:boa:0.94.14rc21:*:*:*:*:*:*:*")]),
    ("http_server", "GoAhead-Webs", [("software", "embedthis", "goahead", None, None)]),
    ("http_server", "mini_httpd/1.19 19dec2003",
     [("software", "acme", "mini_httpd", "1.19", "cpe:2.3:a:acme:mini_httpd:1.19:*:*:*:*:*:*:*")]),
    ("http_server", "Allegro-Software-RomPager/4.06",
     [("software", "allegrosoft", "rompager", "4.06",
       "cpe:2.3:a:allegrosoft:rompager:4.06:*:*:*:*:*:*:*")]),
    ("http_server", "Microsoft-IIS/10.0",
     [("software", "microsoft", "internet_information_services", "10.0",
       "cpe:2.3:a:microsoft:internet_information_services:10.0:*:*:*:*:*:*:*")]),
    ("http_server", "Werkzeug/2.0.1 Python/3.8.10",
     [("software", "palletsprojects", "werkzeug", "2.0.1",
       "cpe:2.3:a:palletsprojects:werkzeug:2.0.1:*:*:*:*:*:*:*"),
      ("software", "python", "python", "3.8.10",
       "cpe:2.3:a:python:python:3.8.10:*:*:*:*:*:*:*")]),
    ("http_server", "Jetty(9.4.43.v20210629)",
     [("software", "eclipse", "jetty", "9.4.43", "cpe:2.3:a:eclipse:jetty:9.4.43:*:*:*:*:*:*:*")]),
    ("ftp_banner", "(vsFTPd 3.0.3)",
     [("software", "beasts", "vsftpd", "3.0.3", "cpe:2.3:a:beasts:vsftpd:3.0.3:*:*:*:*:*:*:*")]),
    ("ftp_banner", "ProFTPD 1.3.5 Server (Debian)",
     [("software", "proftpd", "proftpd", "1.3.5",
       "cpe:2.3:a:proftpd:proftpd:1.3.5:*:*:*:*:*:*:*")]),
    ("telnet_banner", "BusyBox v1.19.4 (2015-03-04) built-in shell",
     [("software", "busybox", "busybox", "1.19.4",
       "cpe:2.3:a:busybox:busybox:1.19.4:*:*:*:*:*:*:*")]),
    ("ssdp_server", "Linux/2.6.36, UPnP/1.0, Portable SDK for UPnP devices/1.6.18",
     [("os", "linux", "linux_kernel", "2.6.36",
       "cpe:2.3:o:linux:linux_kernel:2.6.36:*:*:*:*:*:*:*"),
      ("software", "libupnp_project", "libupnp", "1.6.18",
       "cpe:2.3:a:libupnp_project:libupnp:1.6.18:*:*:*:*:*:*:*")]),
    ("ssdp_server", "Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0",
     [("os", "linux", "linux_kernel", "3.14.0",
       "cpe:2.3:o:linux:linux_kernel:3.14.0:*:*:*:*:*:*:*"),
      ("software", None, "IpBridge", "1.9.0", None)]),
    ("dhcp_vendor_class", "udhcp 1.19.4",
     [("software", "busybox", "busybox", "1.19.4",
       "cpe:2.3:a:busybox:busybox:1.19.4:*:*:*:*:*:*:*")]),
    ("dhcp_vendor_class", "MSFT 5.0", [("os", "microsoft", "windows", None, None)]),
    ("dhcp_vendor_class", "android-dhcp-9",
     [("os", "google", "android", "9", "cpe:2.3:o:google:android:9:*:*:*:*:*:*:*")]),
    ("tls_version", "TLS1.0", [("software", None, "TLS", "1.0", None)]),
    ("modbus_identity", "Schneider Electric;BMX P34 2020;v2.8",
     [("firmware", "Schneider Electric", "BMX P34 2020", "2.8",
       "cpe:2.3:o:schneider-electric:bmx_p34_2020_firmware:2.8:*:*:*:*:*:*:*")]),
    ("enip_identity", "Rockwell Automation/Allen-Bradley;1756-EN2T/D;11.2",
     [("firmware", "Rockwell Automation/Allen-Bradley", "1756-EN2T/D", "11.2",
       "cpe:2.3:o:rockwellautomation:1756-en2t\\/d_firmware:11.2:*:*:*:*:*:*:*")]),
    ("bacnet_identity", ";;", []),
    ("ftp_banner", "FTP server ready", []),
]


@pytest.mark.parametrize(("kind", "raw", "want"), CASES)
def test_normalise_table(kind, raw, want):
    got = [(s.role, s.vendor, s.product, s.version, s.cpe) for s in normalise(kind, raw)]
    assert got == want


def test_cpe_name_escapes_and_needs_all_three():
    assert cpe_name("software", "acme", "web server", "1.0 beta") == \
        "cpe:2.3:a:acme:web_server:1.0_beta:*:*:*:*:*:*:*"
    assert cpe_name("software", "a:b", "p", "1") == "cpe:2.3:a:a\\:b:p:1:*:*:*:*:*:*:*"
    assert cpe_name("os", "linux", "linux_kernel", None) is None
    assert cpe_name("software", None, "x", "1") is None


def test_device_software_belongs_to_the_sender(tmp_path):
    """The server's banner is the server's software and the client's User-Agent the
    client's; the entry's time is the flow's."""
    w = PcapWriter()
    (Conversation(w, 80)
     .client(b"GET / HTTP/1.1\r\nUser-Agent: curl/7.68.0\r\n\r\n")
     .server(b"HTTP/1.1 200 OK\r\nServer: Boa/0.94.14rc21\r\n\r\n").close())
    Conversation(w, 22, cport=40001, t=1_772_438_500.0).server(
        b"SSH-2.0-dropbear_2019.78\r\n").close()
    path = tmp_path / "sw.pcap"
    w.write(path)
    flows, _ = read_capture(path)
    sw = device_software(attribute(flows))
    assert sw.schema == SOFTWARE_SCHEMA
    got = sorted((r["device_id"], r["product"], r["version"], r["evidence"])
                 for r in sw.iter_rows(named=True))
    assert got == [(CLIENT[0], "curl", "7.68.0", "http_user_agent"),
                   (SERVER[0], "boa", "0.94.14rc21", "http_server"),
                   (SERVER[0], "dropbear_ssh", "2019.78", "ssh_banner")]
    ssh = sw.filter(pl.col("product") == "dropbear_ssh")
    assert ssh["first_seen"][0] == dt.datetime(2026, 3, 2, 8, 1, 40, 10_000, tzinfo=dt.UTC)


def test_device_software_without_columns_or_rows():
    assert device_software(pl.DataFrame()).schema == SOFTWARE_SCHEMA
    assert device_software(pl.DataFrame({"device_id": ["x"], "direction": ["out"]})
                           ).height == 0


def test_shared_capture_software(shared_data):
    """The Philips Hue bridge of IoT Sentinel announces its kernel and bridge version in SSDP
    and its DHCP client (BusyBox's udhcp); the phone that sets it up runs Android 5.1.1."""
    path = shared_data / "iot-sentinel" / "HueBridge" / "Setup-A-1-STA.pcap"
    if not path.exists():
        pytest.skip(f"{path} not in the shared data")
    flows, _ = read_capture(path)
    sw = device_software(attribute(flows))
    got = sorted(sw.select("device_id", "role", "vendor", "product", "version", "evidence")
                 .iter_rows(), key=str)
    hue, phone = "00:17:88:24:76:ff", "38:0b:40:ef:85:41"
    assert got == sorted([
        (hue, "os", "linux", "linux_kernel", "3.14.0", "ssdp_server"),
        (hue, "software", None, "IpBridge", "1.9.0", "ssdp_server"),
        (hue, "software", "busybox", "busybox", "1.19.4", "dhcp_vendor_class"),
        (phone, "os", "google", "android", "5.1.1", "http_user_agent"),
        (phone, "software", None, "Dalvik", "2.1.0", "http_user_agent"),
    ], key=str)

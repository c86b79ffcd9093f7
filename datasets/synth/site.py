"""The site's topology as data: its hosts, the gateway, and the cloud services they talk to.

Everything else in the generator names hosts through :func:`host`, so adding a device is a row
here plus its behaviour in :mod:`.behaviours`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Host:
    name: str
    device_type: str
    category: str
    mac: str
    ip: str


GATEWAY = Host("gateway", "gateway", "network", "00:09:5b:10:00:01", "192.168.1.1")
HOSTS: tuple[Host, ...] = (
    Host("camera-1", "ip_camera", "camera", "00:bc:99:21:00:11", "192.168.1.21"),
    Host("camera-2", "ip_camera", "camera", "00:40:8c:21:00:12", "192.168.1.22"),
    Host("phone-1", "voip_phone", "voip", "00:04:f2:31:00:31", "192.168.1.31"),
    Host("phone-2", "voip_phone", "voip", "00:15:65:31:00:32", "192.168.1.32"),
    Host("printer", "printer", "printer", "00:68:eb:41:00:41", "192.168.1.41"),
    Host("smart-tv", "smart_tv", "media", "00:00:f0:51:00:51", "192.168.1.51"),
    Host("plug-1", "smart_plug", "smart_home", "00:0a:eb:61:00:61", "192.168.1.61"),
    Host("plug-2", "smart_plug", "smart_home", "00:0a:eb:61:00:62", "192.168.1.62"),
    Host("thermostat", "thermostat", "smart_home", "18:b4:30:71:00:71", "192.168.1.71"),
    Host("plc", "plc", "ot", "00:00:54:81:00:81", "192.168.1.81"),
    Host("s7-controller", "plc", "ot", "00:01:e3:82:00:82", "192.168.1.82"),
    Host("hmi", "hmi", "ot", "00:00:bc:91:00:91", "192.168.1.91"),
    Host("workstation", "workstation", "it", "00:06:5b:a1:00:a1", "192.168.1.101"),
    Host("pbx", "voip_server", "voip", "00:04:f2:b1:00:b1", "192.168.1.5"),
)
_BY_NAME = {h.name: h for h in HOSTS}


def host(name: str) -> Host:
    return GATEWAY if name == "gateway" else _BY_NAME[name]


#: Every address on the LAN, the gateway included (the traffic engine picks MACs by IP).
BY_IP = {h.ip: h for h in (*HOSTS, GATEWAY)}

#: The cloud service (SNI, address) each device keeps talking to.
CLOUD = {
    "camera-1": ("cloud.hik-connect.example.com", "34.120.10.11"),
    "camera-2": ("video.axis-cloud.example.net", "52.18.22.12"),
    "plug-1": ("use1-api.tplinkra.example.com", "3.208.1.61"),
    "plug-2": ("use1-api.tplinkra.example.com", "3.208.1.61"),
    "thermostat": ("frontdoor.nest.example.com", "35.186.1.71"),
    "smart-tv": ("occ-0-2773.nflxvideo.example.net", "45.57.90.51"),
    "workstation": ("update.microsoft.example.com", "13.107.4.50"),
    "phone-1": ("provisioning.polycom.example.com", "44.230.1.31"),
    "phone-2": ("dm.yealink.example.com", "47.88.1.32"),
}
NTP_SERVER = "162.159.200.1"

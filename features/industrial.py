"""Industrial, building-automation and utility protocols: one table, in nDPI's spelling.

The inventory lists the industrial protocols a device speaks (by nDPI application name), and a
new peer on an industrial service port is a high-severity alert; both read this table, so a
protocol is named one way everywhere (``S7Comm``, ``IEC60870``, as nDPI names them).
"""

from __future__ import annotations

#: nDPI application name -> its well-known service ports (none where nDPI finds it by content
#: or it has no fixed port).
INDUSTRIAL: dict[str, tuple[int, ...]] = {
    "Modbus": (502,), "DNP3": (20000,), "IEC60870": (2404,), "S7Comm": (102,),
    "S7CommPlus": (), "BACnet": (47808,), "EthernetIP": (44818,), "OPC-UA": (4840,),
    "PROFINET_IO": (34962,), "IEC62056": (), "IEEE-C37118": (), "ISO9506-1-MMS": (),
    "MELSEC": (), "FINS": (), "HART-IP": (), "BeckhoffADS": (), "KNXnet_IP": (), "CNP-IP": (),
    "Ether-S-Bus": (), "ANSI_C1222": (), "IEC61850": (), "GOOSE": (), "RTPS": (), "Fox": (),
    "CIP": (), "Omron": (), "CodeSys": (), "PCWorx": (), "Niagara": (),
}

#: nDPI application names of industrial protocols.
INDUSTRIAL_PROTOCOLS = frozenset(INDUSTRIAL)
#: Service port -> protocol, for the ports above.
INDUSTRIAL_PORTS: dict[int, str] = {p: name for name, ports in INDUSTRIAL.items()
                                    for p in ports}

"""Every shared ICS and enterprise-IoT capture goes through extract and inventory."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from flockwatch.serving.cli import app

# Folder -> the name nDPI (and so the inventory) gives the protocol.
EXPECTED = {
    "modbus": "Modbus", "dnp3": "DNP3", "iec104": "IEC60870", "s7comm": "S7Comm",
    "bacnet": "BACnet", "enip_cip": "EthernetIP", "opcua": "OPC-UA", "iec61850": "ISO9506-1-MMS",
    "c37.118": "IEEE-C37118", "dlms_cosem": "IEC62056", "melsec": "MELSEC",
    "omron_fins": "FINS", "hart_ip": "HART-IP", "beckhoff_ads": "BeckhoffADS",
    "knx": "KNXnet_IP", "saia_sbus": "Ether-S-Bus", "profinet": "PROFINET_IO",
    "lontalk": "CNP-IP", "c12.22": "ANSI_C1222",
}
#: Folders captured only on a lab host's loopback: no device (loopback is no device's address),
#: so the protocol shows in the flows, not the inventory.
LOOPBACK_ONLY = {"lontalk"}


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["ics-protocols", "protocol-samples"])
def test_all_shared_captures_extract_and_inventory(shared_data, folder, tmp_path):
    root = shared_data / folder
    runner = CliRunner()
    r = runner.invoke(app, ["extract", str(root), "-o", str(tmp_path / "flows.parquet"), "-q"])
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["inventory", str(root), "--format", "json", "-o",
                            str(tmp_path / "inv.json"), "-q"])
    assert r.exit_code == 0, r.output
    inv = json.loads((tmp_path / "inv.json").read_text())
    assert inv
    if folder == "ics-protocols":
        for sub, name in EXPECTED.items():
            r = runner.invoke(app, ["inventory", str(root / sub), "--format", "json", "-q"])
            assert r.exit_code == 0, (sub, r.output)
            found = {p for d in json.loads(r.stdout) for p in d["industrial_protocols"]}
            if sub in LOOPBACK_ONLY:
                assert json.loads(r.stdout) == [], sub
                out = tmp_path / f"{sub}.parquet"
                r = runner.invoke(app, ["extract", str(root / sub), "-o", str(out), "-q"])
                found = set(pl.read_parquet(out)["application"].str.split(".").explode())
            assert name in found, (sub, found)


def test_captures_without_ip_flows_give_empty_results(shared_data, tmp_path):
    for sub in ("ics-protocols/zigbee/emreekin__Zigbee_zigbee5.pcap",
                "ics-protocols/cdp_lldp/emreekin__LLDP_LLDP.pcap",
                "protocol-samples/discovery_lldp_cdp"):
        r = CliRunner().invoke(app, ["inventory", str(shared_data / sub), "--format", "json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout) == []
        assert "no IP flows" in r.output

"""Risk findings (features/findings.py, docs/findings.md): each rule on flow tables built by
hand, on a capture the tests write (tests/findings_site.py) and on real shared captures; the
findings in the score report (schema v2), the inventory, ``flockwatch findings`` and the live
sensor (JSON lines, CEF, its SQLite inventory migrated in place)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import jsonschema
import polars as pl
import pytest
from findings_site import (
    ATTACKER,
    CAMERA,
    HMI,
    LAPTOP,
    NAS,
    PLC,
    REMOTE_READER,
    ROGUE,
    write_site,
)
from typer.testing import CliRunner

from flockwatch.features import attribute, conform, read_capture
from flockwatch.features.findings import (
    MasterMemory,
    answered,
    evidence,
    fallback_masters,
    findings,
    industrial_requests,
    learn_masters,
    summarise,
)
from flockwatch.features.inventory import risk_score, with_risk
from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.serving.alerts import cef_line
from flockwatch.serving.cli import app
from flockwatch.serving.findings import FINDING_SIGNATURES, ReportedFindings, finding_dicts

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
GW_MAC = "00:09:5b:00:00:01"
HAS_PAYLOAD = "payload" in FLOW_SCHEMA
HAS_OT = "ot_writes" in FLOW_SCHEMA
NEEDS_PAYLOAD = pytest.mark.skipif(not HAS_PAYLOAD, reason="the payload pass "
                                   "(features/payload.py) does not fill `payload` here yet")
NEEDS_OT = pytest.mark.skipif(not HAS_OT, reason="the industrial dissectors (features/ot.py) "
                              "do not fill `ot_writes` here yet")


def _flow(i: int, src: tuple[str, str], dst: tuple[str, str], sport: int, dport: int, *,
          app: str = "Unknown", payload: str | None = None, writes: int | None = None,
          requests: int | None = None, program: int | None = None, syn: int = 2,
          up: int = 5, down: int = 4, proto: int = 6, acks: int | None = None
          ) -> dict[str, object]:
    t = T0 + dt.timedelta(seconds=10 * i)
    return {
        "source": "hand.pcap", "first_seen": t, "last_seen": t + dt.timedelta(seconds=2),
        "src_mac": src[0], "dst_mac": dst[0], "src_ip": src[1], "dst_ip": dst[1],
        "src_port": sport, "dst_port": dport, "protocol": proto, "ip_version": 4,
        "application": app, "packets": up + down, "src2dst_packets": up,
        "dst2src_packets": down, "bytes": 100 * (up + down), "src2dst_bytes": 100 * up,
        "dst2src_bytes": 100 * down, "syn_packets": syn,
        "ack_packets": up + down - 1 if acks is None else acks,
        "rst_packets": 0, "payload": payload, "ot_requests": requests, "ot_writes": writes,
        "ot_program": program,
    }


def _table(rows: list[dict[str, object]]) -> pl.DataFrame:
    """A flow table with the payload and OT columns, whether or not this schema has them."""
    extra = {"payload": pl.String, "ot_requests": pl.Int64, "ot_writes": pl.Int64,
             "ot_program": pl.Int64}
    base = conform(pl.DataFrame(rows, infer_schema_length=None))
    return base.with_columns(pl.Series(c, [r.get(c) for r in rows], dtype=t)
                             for c, t in extra.items())


REMOTE = (GW_MAC, "203.0.113.7")


def _kinds(found: pl.DataFrame) -> set[tuple[str, str]]:
    return set(zip(found["kind"].to_list(), found["device_id"].to_list(), strict=True))


# -- the rules on flow tables ------------------------------------------------------------------

def test_cleartext_credentials_names_the_way_never_the_secret() -> None:
    flows = _table([
        _flow(0, LAPTOP, NAS, 40001, 21, app="FTP_CONTROL",
              payload=">cleartext_login=ftp\n<ftp_banner=220 NAS FTP"),
        _flow(1, LAPTOP, CAMERA, 40002, 161, proto=17, payload=">cleartext_login=snmp_v2c"),
        _flow(2, LAPTOP, CAMERA, 40003, 80, payload=">http_user_agent=curl/8"),
    ])
    found = findings(flows)
    by = {(r["kind"], r["device_id"]): r for r in found.iter_rows(named=True)}
    client = by["cleartext_credentials", LAPTOP[0]]
    assert client["severity"] == "high"  # an FTP password, beside an SNMP community
    assert "FTP USER/PASS" in client["message"] and "SNMPv2c community" in client["message"]
    assert "sent by this device" in client["message"]
    assert "not recorded" in client["message"]
    server = by["cleartext_credentials", NAS[0]]
    assert "received by this device" in server["message"]
    # the SNMP agent only got a community: medium
    assert by["cleartext_credentials", CAMERA[0]]["severity"] == "medium"
    assert client["flows"] == ["192.168.1.20:40001 -> 192.168.1.60:21/tcp",
                               "192.168.1.20:40002 -> 192.168.1.50:161/udp"]


def test_tls_version_and_certificates() -> None:
    cert = ("subject=CN=camera.local;issuer=CN=camera.local;not_before=2015-01-01T00:00:00Z;"
            "not_after=2020-01-01T00:00:00Z;self_signed=1")
    valid = ("subject=CN=cloud;issuer=CN=CA;not_before=2020-01-01T00:00:00Z;"
             "not_after=2040-01-01T00:00:00Z;self_signed=0")
    flows = _table([
        _flow(0, LAPTOP, CAMERA, 40001, 443, app="TLS",
              payload=f"<tls_version=TLS1.0\n<tls_cert={cert}"),
        _flow(1, LAPTOP, (GW_MAC, "93.184.216.34"), 40002, 443, app="TLS",
              payload=f"<tls_version=TLS1.2\n<tls_cert={valid}"),
        _flow(2, CAMERA, (GW_MAC, "93.184.216.35"), 40003, 443, app="TLS",
              payload="<tls_version=SSLv3"),
    ])
    found = findings(flows)
    by = {(r["kind"], r["device_id"]): r for r in found.iter_rows(named=True)}
    assert set(by) == {("obsolete_tls", CAMERA[0]), ("obsolete_tls", LAPTOP[0]),
                       ("bad_certificate", CAMERA[0]), ("bad_certificate", LAPTOP[0])}
    cam = by["obsolete_tls", CAMERA[0]]
    assert cam["severity"] == "high"  # SSLv3 as a client, TLS 1.0 as a server
    assert "SSLv3, TLS1.0" in cam["message"] and "as server and client" in cam["message"]
    bad = by["bad_certificate", CAMERA[0]]
    assert bad["severity"] == "medium"
    assert "expired 2020-01-01, self-signed (CN=camera.local)" in bad["message"]
    assert "presented by this device" in bad["message"]
    assert "presented to this device by 192.168.1.50" in by[
        "bad_certificate", LAPTOP[0]]["message"]


def test_certificate_valid_at_the_flow_time_is_no_finding() -> None:
    cert = ("subject=CN=x;issuer=CN=CA;not_before=2015-01-01T00:00:00Z;"
            "not_after=2030-01-01T00:00:00Z;self_signed=0")
    flows = _table([_flow(0, LAPTOP, CAMERA, 40001, 443, payload=f"<tls_cert={cert}")])
    assert findings(flows).height == 0
    # the same certificate seen after it expired is one
    later = flows.with_columns(pl.lit(dt.datetime(2031, 1, 1, tzinfo=dt.UTC)).cast(
        pl.Datetime("ms", "UTC")).alias("first_seen"))
    assert findings(later)["kind"].to_list() == ["bad_certificate"] * 2


def test_remote_access_needs_an_answered_inbound_session() -> None:
    rows = [
        _flow(0, REMOTE, CAMERA, 50000, 23, app="Telnet"),  # answered: finding
        _flow(1, REMOTE, CAMERA, 50001, 22, syn=1, up=1, down=1),  # SYN, RST: refused
        _flow(2, REMOTE, CAMERA, 50002, 3389, up=1, down=0, syn=1),  # never answered
        _flow(3, LAPTOP, CAMERA, 50003, 22, app="SSH"),  # local client
        _flow(4, CAMERA, REMOTE, 50004, 22, app="SSH"),  # outbound
        _flow(5, REMOTE, PLC, 50005, 502, app="RDP"),  # RDP cookie to a PLC port: not RDP
        _flow(6, REMOTE, CAMERA, 50006, 2222, app="SSH"),  # SSH on another port: nDPI says
        _flow(7, REMOTE, CAMERA, 50007, 5900, syn=1, acks=9),  # first seen at the SYN-ACK
    ]
    flows = _table(rows)
    att = attribute(flows)
    ok = flows.select(answered())[:, 0].to_list()
    assert ok[:3] == [True, False, False] and ok[7]
    found = findings(flows, att)
    ra = found.filter(pl.col("kind") == "remote_access_exposed")
    assert ra["device_id"].to_list() == [CAMERA[0]]
    assert ra["severity"].to_list() == ["high"]
    msg = ra["message"][0]
    assert "Telnet (23/tcp)" in msg and "SSH (2222/tcp)" in msg and "3389" not in msg
    assert "VNC (5900/tcp)" in msg and "3 sessions" in msg
    assert sorted(ra["flows"][0].to_list()) == [
        "203.0.113.7:50000 -> 192.168.1.50:23/tcp", "203.0.113.7:50006 -> 192.168.1.50:2222/tcp",
        "203.0.113.7:50007 -> 192.168.1.50:5900/tcp"]


def test_industrial_remote_both_ways_but_not_probes() -> None:
    rows = [
        _flow(0, HMI, (GW_MAC, "166.161.16.230"), 40000, 502, app="Modbus"),  # outbound
        _flow(1, (GW_MAC, "1.59.74.106"), PLC, 40001, 20000, app="DNP3"),  # inbound
        _flow(2, (GW_MAC, "1.59.74.107"), PLC, 40002, 102, up=1, down=1, syn=1),  # refused
        _flow(3, HMI, PLC, 40003, 502, app="Modbus"),  # local
        _flow(4, HMI, (GW_MAC, "52.29.29.242"), 34962, 443, app="TLS"),  # port 34962: client
        _flow(5, HMI, ("ff:ff:ff:ff:ff:ff", "255.255.255.255"), 40005, 44818, proto=17,
              app="EthernetIP"),  # ListIdentity broadcast: the segment, not the internet
    ]
    found = findings(_table(rows))
    assert _kinds(found) == {("industrial_remote", HMI[0]), ("industrial_remote", PLC[0])}
    msgs = dict(zip(found["device_id"].to_list(), found["message"].to_list(), strict=True))
    assert msgs[HMI[0]] == "Modbus to non-local address(es) 166.161.16.230, 1 flow"
    assert msgs[PLC[0]] == "DNP3 from non-local address(es) 1.59.74.106, 1 flow"


def _plant(writer: tuple[str, str] = ROGUE) -> pl.DataFrame:
    return _table([
        _flow(0, HMI, PLC, 40000, 502, app="Modbus", requests=40, writes=0, program=0),
        _flow(1, writer, PLC, 40001, 502, app="Modbus", requests=3, writes=2, program=1),
        _flow(2, HMI, PLC, 40002, 502, app="Modbus", requests=10, writes=4, program=0),
    ])


def test_industrial_write_against_the_fallback_master() -> None:
    flows = _plant()
    att = attribute(flows)
    req = industrial_requests(att)
    assert dict(zip(req["peer"].to_list(), req["requests"].to_list(), strict=True)) == {
        HMI[1]: 50, ROGUE[1]: 3}
    assert fallback_masters(req) == {(PLC[0], "Modbus"): HMI[1]}
    found = findings(flows, att)
    w = found.filter(pl.col("kind") == "industrial_write").row(0, named=True)
    assert w["device_id"] == PLC[0] and w["severity"] == "high"
    assert w["flows"] == ["192.168.1.71:40001 -> 192.168.1.80:502/tcp"]  # not the HMI's
    assert "2 writes, 1 program change from 192.168.1.71" in w["message"]
    assert f"none learnt for it; taken as {HMI[1]}" in w["message"]


def test_fallback_master_reaches_most_devices_before_flooding_one() -> None:
    """The shared modbus-scada capture's shape: the master polls six RTUs about a hundred
    times each; another host floods one RTU with thousands of reads. The master, not the
    flooder, is the RTUs' master, so the master's writes are no finding and the flooder's
    would be."""
    rows = [_flow(k, HMI, (f"00:80:f4:00:01:{k:02x}", f"192.168.1.{101 + k}"), 40000 + k, 502,
                  app="Modbus", requests=102, writes=0, program=0) for k in range(6)]
    victim = (f"00:80:f4:00:01:{3:02x}", "192.168.1.104")
    rows.append(_flow(7, ROGUE, victim, 41000, 502, app="Modbus", requests=3345, writes=0,
                      program=0))
    rows.append(_flow(8, HMI, victim, 41001, 502, app="Modbus", requests=1, writes=1,
                      program=0))
    att = attribute(_table(rows))
    assert fallback_masters(industrial_requests(att))[victim[0], "Modbus"] == HMI[1]
    assert findings(_table(rows), att).filter(pl.col("kind") == "industrial_write").height == 0
    rows[-1] = _flow(8, ROGUE, victim, 41001, 502, app="Modbus", requests=1, writes=1,
                     program=0)
    w = findings(_table(rows)).filter(pl.col("kind") == "industrial_write")
    assert w["device_id"].to_list() == [victim[0]] and ROGUE[1] in w["message"][0]


def test_fallback_master_per_protocol() -> None:
    """The shared modbusBig capture's shape: one host writes a PLC over Modbus; an
    engineering station holds S7 sessions with it and another PLC. The S7 station reaches
    more devices but is no Modbus master: the Modbus writer is, and its writes no finding."""
    other = ("00:80:f4:00:00:81", "192.168.1.81")
    rows = [_flow(0, ROGUE, PLC, 40000, 502, app="Modbus", requests=2774, writes=1387,
                  program=0),
            _flow(1, HMI, PLC, 40001, 102, app="S7CommPlus"),
            _flow(2, HMI, other, 40002, 102, app="S7CommPlus")]
    att = attribute(_table(rows))
    fb = fallback_masters(industrial_requests(att))
    assert fb[PLC[0], "Modbus"] == ROGUE[1] and fb[PLC[0], "S7CommPlus"] == HMI[1]
    assert findings(_table(rows), att).filter(pl.col("kind") == "industrial_write").height == 0


def test_industrial_write_against_learnt_masters() -> None:
    learnt = learn_masters(attribute(_table([
        _flow(0, HMI, PLC, 40000, 502, app="Modbus", requests=40, writes=0, program=0),
        _flow(1, PLC, (GW_MAC, "8.8.8.8"), 40001, 53, proto=17)])))
    assert learnt[PLC[0]] == frozenset({HMI[1]})
    # every device learnt is listed, one without industrial requests with no master
    assert learnt[PLC[0]] and all(v == frozenset() for k, v in learnt.items() if k != PLC[0])
    flows = _plant()
    att = attribute(flows)
    w = summarise(evidence(att), industrial_requests(att), learnt).filter(
        pl.col("kind") == "industrial_write")
    assert w.height == 1 and "learnt: 192.168.1.70" in w["message"][0]
    # the HMI writes too, but it is a learnt master: no finding
    assert summarise(evidence(attribute(_plant(HMI))), None, learnt).filter(
        pl.col("kind") == "industrial_write").height == 0
    # a device learnt with no master: every write is from outside
    none = {PLC[0]: frozenset()}
    w = summarise(evidence(att), industrial_requests(att), none).filter(
        pl.col("kind") == "industrial_write")
    assert "192.168.1.70" in w["message"][0] and "learnt: none" in w["message"][0]


def test_master_memory_accumulates_requests() -> None:
    mem = MasterMemory()
    first = industrial_requests(attribute(_plant()))
    mem.update(first)
    again = mem.update(first)
    assert again.filter(pl.col("peer") == HMI[1])["requests"].to_list() == [100]


def test_flow_tables_without_the_payload_and_ot_columns_give_what_flows_alone_tell() -> None:
    bare = conform(pl.DataFrame([_flow(0, REMOTE, CAMERA, 50000, 23, app="Telnet")]))
    bare = bare.drop([c for c in ("payload", "ot_requests", "ot_writes", "ot_program")
                      if c in bare.columns])
    assert findings(bare)["kind"].to_list() == ["remote_access_exposed"]
    assert findings(bare.clear()).height == 0


def test_risk_score_formula() -> None:
    assert risk_score([]) == 0
    assert risk_score(["low"]) == 15
    assert risk_score(["medium", "low"]) == 44
    assert risk_score(["high"]) == 70
    assert risk_score(["high", "high", "high", "high", "high"]) == 100
    assert risk_score(["low"] * 3) < risk_score(["medium"]) < risk_score(["high"])


# -- golden: the capture the tests write ----------------------------------------------------------

@pytest.fixture(scope="module")
def site_captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("findings-site")
    return write_site(d / "risky.pcap", True), write_site(d / "safe.pcap", False)


@pytest.fixture(scope="module")
def site_findings(site_captures: tuple[Path, Path]) -> tuple[pl.DataFrame, pl.DataFrame]:
    out = []
    for path in site_captures:
        flows, problems = read_capture(path)
        assert not problems
        out.append(findings(flows))
    return out[0], out[1]


def test_golden_site_flow_rules(site_findings: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    risky, safe = site_findings
    assert ("remote_access_exposed", CAMERA[0]) in _kinds(risky)
    assert ("industrial_remote", PLC[0]) in _kinds(risky)
    ra = risky.filter(pl.col("kind") == "remote_access_exposed").row(0, named=True)
    assert ra["flows"] == [f"{ATTACKER}:41001 -> {CAMERA[1]}:23/tcp"]  # not the refused SSH
    ir = risky.filter(pl.col("kind") == "industrial_remote").row(0, named=True)
    assert REMOTE_READER in ir["message"]
    assert safe.height == 0  # the same hosts doing the same things safely: nothing


@NEEDS_PAYLOAD
def test_golden_site_payload_rules(site_findings: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    risky, safe = site_findings
    kinds = _kinds(risky)
    for k in [("cleartext_credentials", CAMERA[0]), ("cleartext_credentials", NAS[0]),
              ("cleartext_credentials", LAPTOP[0]), ("obsolete_tls", CAMERA[0]),
              ("bad_certificate", CAMERA[0])]:
        assert k in kinds
    assert not any("hunter2" in m or "admin" in m for m in risky["message"].to_list())
    assert safe.height == 0


@NEEDS_OT
def test_golden_site_industrial_write(site_findings: tuple[pl.DataFrame, pl.DataFrame]
                                      ) -> None:
    risky, safe = site_findings
    w = risky.filter(pl.col("kind") == "industrial_write").row(0, named=True)
    assert w["device_id"] == PLC[0] and ROGUE[1] in w["message"] and HMI[1] in w["message"]
    assert safe.filter(pl.col("kind") == "industrial_write").height == 0


# -- golden: real shared captures ------------------------------------------------------------

def _real(shared_data: Path, rel: str) -> pl.DataFrame:
    path = shared_data / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the shared data")
    flows, _ = read_capture(path)
    return findings(flows)


def test_real_modbus_to_a_remote_server(shared_data: Path) -> None:
    found = _real(shared_data, "ics-protocols/modbus/iti__ModbusTCP_modbus_test_data_part2.pcap")
    assert found["kind"].to_list() == ["industrial_remote"]
    assert found["message"][0] == "Modbus to non-local address(es) 166.161.16.230, 1 flow"


def test_real_dnp3_outstation_reached_from_the_internet(shared_data: Path) -> None:
    found = _real(shared_data, "ics-protocols/dnp3/"
                  "emreekin__DNP3_dnp3dataset_capturerem_to_cite_the_paper.pcap")
    assert found["kind"].to_list() == ["industrial_remote"]
    row = found.row(0, named=True)
    assert row["ip"] == "192.168.0.197" and len(row["flows"]) == 10  # capped
    assert "DNP3 from non-local address(es)" in row["message"] and "371 flows" in row["message"]


def test_real_internet_scans_of_port_502(shared_data: Path) -> None:
    """Hosts on the internet reach two Modbus servers; one sends an RDP cookie to port 502,
    which is no remote-access service of the PLC."""
    found = _real(shared_data, "ics-protocols/modbus/zeek__modbus_modbus-and-non-modbus-p502.pcap")
    assert set(found["kind"].to_list()) == {"industrial_remote"}


@NEEDS_OT
def test_real_modbus_write_by_a_host_that_is_not_the_master(shared_data: Path) -> None:
    found = _real(shared_data, "ics-protocols/modbus/iti__ModbusTCP_Modbus_modbus_test.pcap")
    w = found.filter(pl.col("kind") == "industrial_write").row(0, named=True)
    assert w["ip"] == "192.168.0.20"
    assert "192.168.0.156" in w["message"] and "taken as 192.168.0.21" in w["message"]


# -- where findings show -------------------------------------------------------------------------

def _model(tmp_path: Path, masters: dict[str, frozenset[str]] | None = None) -> Path:
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model

    path = tmp_path / "model"
    save_model(Bundle(window=WindowSpec(300.0), masters=masters), path)
    return path


def test_score_json_has_findings_and_validates(site_captures: tuple[Path, Path],
                                               tmp_path: Path) -> None:
    from flockwatch.serving.contract import SCHEMA_VERSION
    from flockwatch.serving.score import SCORE_JSON_SCHEMA

    out = tmp_path / "report.json"
    model = str(_model(tmp_path))
    r = CliRunner().invoke(app, ["score", str(site_captures[0]), "--model", model, "-o",
                                 str(out), "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, SCORE_JSON_SCHEMA)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["vulnerabilities"] == []
    kinds = {(f["kind"], f["device_id"]) for f in doc["findings"]}
    assert {("remote_access_exposed", CAMERA[0]), ("industrial_remote", PLC[0])} <= kinds
    dev = {d["device_id"]: d for d in doc["devices"]}
    assert dev[CAMERA[0]]["findings"] >= 1 and dev[CAMERA[0]]["risk_score"] >= 70
    assert dev[HMI[0]]["risk_score"] == 0 and dev[HMI[0]]["software"] == []
    if HAS_PAYLOAD:  # the camera's SSH banner names its software
        assert any("dropbear" in x for x in dev[CAMERA[0]]["software"])
    # a finding that breaks the contract fails validation
    bad = {**doc, "findings": [{**doc["findings"][0], "severity": "dire"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCORE_JSON_SCHEMA)
    # the table lists them under the devices
    r = CliRunner().invoke(app, ["score", str(site_captures[0]), "--model", model, "-q"])
    assert r.exit_code == 0, r.output
    assert "risk finding(s)" in r.output and "remote_access_exposed" in r.output


def test_score_uses_the_masters_the_model_learnt(site_captures: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    """A model whose baseline learnt the PLC with no master: the HMI's writes in the safe
    capture are findings too (the fallback would have taken the HMI as master)."""
    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.serving.score import report

    flows, _ = read_capture(site_captures[1])
    flows = _with_ot(flows)
    learnt = report(Bundle(window=WindowSpec(300.0), masters={PLC[0]: frozenset()}), flows, [])
    fallback = report(Bundle(window=WindowSpec(300.0)), flows, [])
    assert [f["kind"] for f in learnt.findings] == ["industrial_write"]
    assert "learnt: none" in learnt.findings[0]["message"]
    assert fallback.findings == []


def _with_ot(flows: pl.DataFrame) -> pl.DataFrame:
    """The OT counters the industrial dissectors would give the site's Modbus flows (one
    write in the last one), where this schema does not have them yet."""
    if HAS_OT:
        return flows
    modbus = pl.col("dst_port") == 502
    last = pl.col("first_seen") == pl.col("first_seen").filter(modbus).max()
    return flows.with_columns(
        pl.when(modbus).then(pl.when(last).then(1).otherwise(8)).cast(pl.Int64)
        .alias("ot_requests"),
        pl.when(modbus).then(pl.when(last).then(1).otherwise(0)).cast(pl.Int64)
        .alias("ot_writes"),
        pl.when(modbus).then(0).cast(pl.Int64).alias("ot_program"))


def test_findings_command(site_captures: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["findings", str(site_captures[0]), "-q"])
    assert r.exit_code == 0, r.output
    assert "risk finding(s)" in r.output and "[high  ] remote_access_exposed" in r.output
    out = tmp_path / "f.json"
    r = runner.invoke(app, ["findings", str(site_captures[0]), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    from flockwatch.serving.contract import Finding, json_schema

    jsonschema.validate(doc, {"type": "array", "items": json_schema(Finding)})
    assert {f["kind"] for f in doc} >= {"remote_access_exposed", "industrial_remote"}
    r = runner.invoke(app, ["findings", str(site_captures[1]), "-q"])
    assert r.exit_code == 0 and "no risk findings" in r.output
    r = runner.invoke(app, ["findings", "--help"])
    assert r.exit_code == 0 and "--format" in r.output


def test_findings_command_bad_input(site_captures: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nope.pcap"
    r = runner.invoke(app, ["findings", str(missing)])
    assert r.exit_code == 1
    assert r.output.strip().splitlines()[-1].startswith("flockwatch: error: ")
    assert "Traceback" not in r.output
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    r = runner.invoke(app, ["findings", str(junk), str(site_captures[0]), "-f", "json"])
    assert r.exit_code == 1  # the good capture is read and listed, the bad one named
    assert "remote_access_exposed" in r.output and "junk.pcap" in r.output
    r = runner.invoke(app, ["findings", str(site_captures[0]), "-f", "yaml"])
    assert r.exit_code == 1 and "flockwatch: error: --format" in r.output
    r = runner.invoke(app, ["findings"])
    assert r.exit_code == 1 and "SOURCE" in r.output


def test_inventory_has_risk_columns(site_captures: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "inv.json"
    r = CliRunner().invoke(app, ["inventory", str(site_captures[0]), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    inv = {d["device_id"]: d for d in json.loads(out.read_text())}
    # remote access, then with the payload pass a Telnet login, TLS 1.0 and its certificate
    assert inv[CAMERA[0]]["findings"] == (4 if HAS_PAYLOAD else 1)
    assert inv[CAMERA[0]]["risk_score"] == (100 if HAS_PAYLOAD else 70)
    assert inv[HMI[0]]["risk_score"] == 0 and inv[HMI[0]]["findings"] == 0
    assert "firmware" in inv[HMI[0]] and "software" in inv[HMI[0]]
    r = CliRunner().invoke(app, ["inventory", str(site_captures[0]), "-q"])
    assert r.exit_code == 0 and "risk" in r.output
    software = pl.DataFrame({"device_id": [CAMERA[0], CAMERA[0]],
                             "role": ["firmware", "software"], "vendor": ["Axis", None],
                             "product": ["AXIS OS", "dropbear"], "version": ["10.12", "2019.78"]})
    flows, _ = read_capture(site_captures[0])
    from flockwatch.features.inventory import inventory

    inv2 = with_risk(inventory(flows), findings(flows), software).filter(
        pl.col("device_id") == CAMERA[0]).row(0, named=True)
    assert inv2["firmware"] == ["Axis AXIS OS 10.12"] and inv2["software"] == ["dropbear 2019.78"]


def test_cef_lines_for_findings() -> None:
    f = finding_dicts(findings(_table([_flow(0, REMOTE, CAMERA, 50000, 23, app="Telnet")])))[0]
    line = cef_line(f, "0.6")
    assert line.startswith("CEF:0|flockwatch|flockwatch|0.6|404|remote_access_exposed|8|")
    assert f"smac={CAMERA[0]}" in line and f"src={CAMERA[1]}" in line
    assert "cs1Label=findingKind cs1=remote_access_exposed" in line
    assert "cs2Label=evidenceFlow cs2=203.0.113.7:50000 -> 192.168.1.50:23/tcp" in line
    assert "cn2Label=evidenceFlows cn2=1" in line and "cs5" not in line
    assert "cs5Label=modelVersion cs5=7" in cef_line({**f, "model_version": "7"}, "0.6")
    assert sorted(FINDING_SIGNATURES.values()) == list(range(401, 407))
    assert not set(FINDING_SIGNATURES.values()) & {100, 200, 300}
    # the message's = and \ are escaped, the header's | too
    odd = cef_line({**f, "message": "a=b\\c", "kind": "obsolete_tls"}, "0.6")
    assert "|402|obsolete_tls|" in odd and "msg=a\\=b\\\\c" in odd


def test_reported_once_per_device_and_rule() -> None:
    mem = ReportedFindings()
    f = {"device_id": "a", "kind": "obsolete_tls", "severity": "medium"}
    assert mem.fresh([f]) == [f]
    assert mem.fresh([f, {**f, "severity": "high"}]) == []
    g = {**f, "kind": "bad_certificate", "severity": "low"}
    assert mem.fresh([g]) == [g] and len(mem) == 2
    devs = mem.risk(pl.DataFrame({"device_id": ["a", "b"]}))
    assert devs["risk_score"].to_list() == [risk_score(["high", "low"]), 0]
    assert devs["findings"].to_list() == [2, 0]


OLD_SCHEMA = """CREATE TABLE devices (
    device_id TEXT PRIMARY KEY, mac TEXT, ip TEXT, vendor TEXT, first_seen TEXT,
    last_seen TEXT, device_type TEXT, type_confidence REAL, status TEXT,
    flows INTEGER, bytes INTEGER, category TEXT, category_confidence REAL, oui_vendor TEXT,
    vendor_confidence REAL, candidates TEXT)"""


def test_sensor_inventory_migrates_an_old_database(tmp_path: Path) -> None:
    from flockwatch.serving.sensor import Inventory

    db = tmp_path / "inv.sqlite"
    con = sqlite3.connect(str(db))
    con.execute(OLD_SCHEMA)
    con.execute("INSERT INTO devices (device_id, mac, ip, flows, bytes, status) VALUES "
                "('aa', 'aa', '192.168.1.9', 3, 300, 'learned')")
    con.commit()
    con.close()
    inv = Inventory(db)
    inv.close()
    con = sqlite3.connect(str(db))
    cols = [r[1] for r in con.execute("PRAGMA table_info(devices)")]
    rows = con.execute("SELECT device_id, ip, flows, risk_score, findings, software "
                       "FROM devices").fetchall()
    con.close()
    assert {"software", "firmware", "risk_score", "findings"} <= set(cols)
    assert rows == [("aa", "192.168.1.9", 3, None, None, None)]
    Inventory(db).close()  # opened again: nothing to add, nothing lost


def test_sensor_reports_findings_once(site_captures: tuple[Path, Path], tmp_path: Path) -> None:
    """Two windows showing the same risks: each finding goes to the JSON lines once, and the
    inventory's risk columns hold them."""
    import shutil

    from flockwatch.models.store import load_model
    from flockwatch.serving.sensor import Sensor

    sensor = Sensor("unused0", load_model(str(_model(tmp_path))),
                    alerts_path=tmp_path / "alerts.jsonl", inventory_db=tmp_path / "inv.sqlite",
                    window_s=300)
    for k in range(2):
        chunk = tmp_path / f"chunk-{k}.pcap"
        shutil.copy(site_captures[0], chunk)
        sensor._process(chunk)
    sensor.jsonl.close()
    sensor.inventory.close()  # type: ignore[union-attr]
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    found = [x for x in lines if x["kind"] in FINDING_SIGNATURES]
    keys = [(f["device_id"], f["kind"]) for f in found]
    assert len(keys) == len(set(keys)) == sensor.counters.findings
    assert (CAMERA[0], "remote_access_exposed") in keys
    con = sqlite3.connect(str(tmp_path / "inv.sqlite"))
    risk = dict(con.execute("SELECT device_id, risk_score FROM devices").fetchall())
    con.close()
    assert risk[CAMERA[0]] >= 70 and risk[HMI[0]] == 0
    assert "findings=" in sensor.counters.line()


def test_console_inventory_rows_carry_risk() -> None:
    """The console reads the sensor's risk columns (JSON lists as lists, a broken one as
    none) and sorts the inventory by risk."""
    from flockwatch.serving.console.data import _sensor_device, sort_devices

    row = _sensor_device({"device_id": "a", "software": '["dropbear 2019.78"]',
                          "firmware": "not json", "risk_score": 88, "findings": 2})
    assert row["software"] == ["dropbear 2019.78"] and row["firmware"] == []
    assert (row["risk_score"], row["findings"]) == (88, 2)
    old = _sensor_device({"device_id": "b"})  # an inventory without the columns
    assert old["risk_score"] is None and old["software"] == []
    ranked = sort_devices([old, row, {**row, "device_id": "c", "risk_score": 15}],
                          "risk_score", True)
    assert [d["device_id"] for d in ranked] == ["a", "c", "b"]


@NEEDS_OT
def test_findings_command_with_a_models_masters(site_captures: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    """--model: the masters its baseline learnt decide; the safe capture's HMI writes to a
    PLC learnt without masters are a finding then, and none without the model."""
    runner = CliRunner()
    model = _model(tmp_path, {PLC[0]: frozenset()})
    r = runner.invoke(app, ["findings", str(site_captures[1]), "-f", "json", "-q"])
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = runner.invoke(app, ["findings", str(site_captures[1]), "-f", "json", "-q",
                            "--model", str(model)])
    assert r.exit_code == 0, r.output
    found = json.loads(r.output)
    assert [f["kind"] for f in found] == ["industrial_write"]
    assert "learnt: none" in found[0]["message"] and HMI[1] in found[0]["message"]
    r = runner.invoke(app, ["findings", str(site_captures[1]), "--model",
                            str(tmp_path / "no-model")])
    assert r.exit_code == 1 and r.output.count("flockwatch: error:") == 1
    assert "Traceback" not in r.output


def test_console_keeps_findings_out_of_the_sensors_alerts(tmp_path: Path) -> None:
    """The sensor writes findings to its alerts file; the console reading that file counts
    them as findings, never as alerts (they have no window)."""
    from flockwatch.serving.console.data import SensorSource

    f = finding_dicts(findings(_table([_flow(0, REMOTE, CAMERA, 50000, 23, app="Telnet")])))
    alert = {"kind": "new_device", "severity": "medium", "device_id": "aa", "mac": "aa",
             "ip": "192.168.1.9", "start": "2026-03-02T08:00:00Z",
             "end": "2026-03-02T08:05:00Z", "top_features": [], "message": "new device"}
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [alert, *f]) + "\n")
    src = SensorSource(None, path)
    snap = src.snapshot()
    assert [a["kind"] for a in snap.alerts] == ["new_device"]
    assert [x["kind"] for x in src.findings] == ["remote_access_exposed"]

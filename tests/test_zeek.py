import json

import polars as pl
import pytest
from flockwatch.features import FLOW_SCHEMA, InputError, read_zeek_conn
from flockwatch.serving.cli import app
from typer.testing import CliRunner

FORMS = ["conn.log", "conn-tsv.log", "conncomma.log", "conntimelast.log"]


@pytest.mark.parametrize("name", FORMS)
def test_shared_zeek_forms(shared_data, name):
    df, problems = read_zeek_conn(shared_data / "zeek-logs" / name)
    assert problems == []
    assert df.schema == FLOW_SCHEMA
    assert df.height >= 4
    row = df.filter(pl.col("src_port") == 37604).row(0, named=True)
    assert (row["src_ip"], row["dst_ip"], row["dst_port"], row["protocol"]) == (
        "141.142.220.235", "199.233.217.249", 56666, 6)
    assert row["application"] == "ftp-data"
    assert (row["src2dst_packets"], row["dst2src_packets"], row["bytes"]) == (4, 4, 216 + 562)
    assert row["src_mac"] is None and row["stddev_ps"] is None


def test_all_forms_agree(shared_data):
    tables = [read_zeek_conn(shared_data / "zeek-logs" / n)[0].drop("source")
              .sort("first_seen", "src_port") for n in FORMS]
    common = min(t.height for t in tables)
    for t in tables[1:]:
        assert t.head(common).equals(tables[0].head(common)) or t.height != tables[0].height


def test_json_lines(tmp_path):
    rows = [
        {"ts": 1700000000.5, "uid": "C1", "id.orig_h": "192.168.1.20", "id.orig_p": 51000,
         "id.resp_h": "192.168.1.81", "id.resp_p": 502, "proto": "tcp", "service": "modbus",
         "duration": 1.5, "orig_pkts": 10, "orig_ip_bytes": 800, "resp_pkts": 10,
         "resp_ip_bytes": 900, "history": "ShADadFf", "orig_l2_addr": "00:0A:EB:00:00:01",
         "resp_l2_addr": "00:00:54:00:00:02"},
        {"ts": 1700000010.0, "uid": "C2", "id.orig_h": "192.168.1.20", "id.orig_p": 5353,
         "id.resp_h": "224.0.0.251", "id.resp_p": 5353, "proto": "udp", "service": "dns",
         "orig_pkts": 1, "orig_ip_bytes": 120, "resp_pkts": 0, "resp_ip_bytes": 0,
         "orig_l2_addr": "00:0a:eb:00:00:01", "resp_l2_addr": "01:00:5e:00:00:fb"},
    ]
    p = tmp_path / "conn.json.log"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    df, _ = read_zeek_conn(p)
    first = df.row(0, named=True)
    assert first["application"] == "modbus" and first["duration_ms"] == 1500
    assert first["src_mac"] == "00:0a:eb:00:00:01" and first["packets"] == 20
    r = CliRunner().invoke(app, ["inventory", str(p), "--format", "json"])
    assert r.exit_code == 0, r.output
    devices = json.loads(r.stdout)
    assert {d["device_id"] for d in devices} == {"00:0a:eb:00:00:01", "00:00:54:00:00:02"}


@pytest.mark.parametrize("text,needle", [
    ("#separator \\x09\n#fields\tts\tuid\n1.0\tC1\n", "missing columns: id.orig_h, id.orig_p, id.resp_h, id.resp_p, proto"),
    ("#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n"
     "1.0\t1.2.3.4\t1\n", "line 3"),
    ('{"ts": 1, "id.orig_h": "1.2.3.4"\n', "malformed JSON"),
    ("#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n"
     "notatime\t1.2.3.4\t1\t5.6.7.8\t2\ttcp\n", "valid ts"),
])
def test_malformed_zeek(tmp_path, text, needle):
    p = tmp_path / "conn.log"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        read_zeek_conn(p)
    assert str(p) in str(err.value) and needle in str(err.value)
    r = CliRunner().invoke(app, ["extract", str(p), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 1 and "Traceback" not in r.output and needle in r.output

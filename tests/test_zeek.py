import json

import polars as pl
import pytest
from typer.testing import CliRunner

from flockwatch.features import FLOW_SCHEMA, InputError, read_zeek_conn
from flockwatch.serving.cli import app

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
    ("#separator \\x09\n#fields\tts\tuid\n1.0\tC1\n",
     "missing columns: id.orig_h, id.orig_p, id.resp_h, id.resp_p, proto"),
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


# Issue 18: hostile Zeek logs. A malformed header is one error naming its line; a row with a
# value Zeek would not write is skipped and counted.

HEAD = ("#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\t"
        "orig_pkts\tresp_pkts\tduration\n")
ROW = "1700000000.5\t10.0.0.1\t1234\t10.0.0.2\t80\ttcp\t3\t4\t1.5\n"


@pytest.mark.parametrize("text,needle", [
    ("#separator \\x\n#fields\tts\n1\n", "line 1: #separator must be one character"),
    ("#separator \\u00e9\n#fields\u00e9ts\n1\n", "line 1: #separator must be one character"),
    ("#separator ab\n#fieldsabts\n", "line 1: #separator must be one character"),
    ("#separator \\xe9\n#fields\u00e9ts\n", "line 1: #separator '\u00e9' is not a one-byte"),
    ("#separator \\x09\n#types\ttime\n" + ROW, "line 3: a record before any #fields line"),
    ("#separator \\x09\n#fields\tts\tid.orig_h\tts\n1\t1.1.1.1\t1\n",
     "line 2: field 'ts' appears twice"),
    ('{"ts": 1, "x": ' + "[" * 50_000 + "]" * 50_000 + "}\n", "line 1: malformed JSON Zeek "
     "log: nested too deep"),
    (ROW + ROW, "line 1: no #fields line or header row"),
])
def test_malformed_header_is_one_error_naming_the_line(tmp_path, text, needle):
    p = tmp_path / "conn.log"
    p.write_text(text)
    with pytest.raises(InputError) as err:
        read_zeek_conn(p)
    assert str(err.value) == f"{p}: {err.value.problem}" and needle in err.value.problem
    r = CliRunner().invoke(app, ["extract", str(p), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 1 and "Traceback" not in r.output and needle in r.output


@pytest.mark.parametrize("field,old,bad", [
    ("id.orig_p", "\t1234\t", "\tx\t"),
    ("id.orig_p", "\t1234\t", "\t-5\t"),
    ("id.resp_p", "\t80\t", "\t99999999999\t"),
    ("id.orig_h", "10.0.0.1", "not-an-ip"),
    ("orig_pkts", "\t3\t4\t", f"\t{2**64}\t4\t"),
    ("duration", "\t1.5\n", "\t-1.5\n"),
    ("proto", "\ttcp\t", "\tfoo\t"),
])
def test_invalid_values_are_skipped_and_counted(tmp_path, field, old, bad):
    """Ports x/-5/99999999999 became null, not-an-ip was kept, 2^64 packets became 0, a
    negative duration passed: now each such row is skipped, and the warning says so."""
    p = tmp_path / "conn.log"
    p.write_text(HEAD + ROW + ROW.replace(old, bad) + ROW)
    df, (w,) = read_zeek_conn(p)
    assert df.height == 2 and w.severity == "warning" and w.skipped == 1
    assert w.message.startswith(f"1 row skipped: {field} ") and "first at line 4" in w.message
    r = CliRunner().invoke(app, ["extract", str(p), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 0 and "1 row skipped" in r.output
    p.write_text(HEAD + ROW.replace(old, bad))
    with pytest.raises(InputError, match="no valid records"):
        read_zeek_conn(p)


def test_protocol_names_and_scope_separator(tmp_path):
    """`proto SCTP` became 0; `id_orig_h` (Zeek's `_` scope separator) was refused."""
    p = tmp_path / "conn.log"
    p.write_text(HEAD.replace("id.", "id_") + ROW.replace("\ttcp\t", "\tSCTP\t")
                 + ROW.replace("\ttcp\t", "\tgre\t") + ROW.replace("\ttcp\t", "\t89\t"))
    df, problems = read_zeek_conn(p)
    assert problems == [] and df["protocol"].to_list() == [132, 47, 89]
    assert df["src_ip"].to_list() == ["10.0.0.1"] * 3
    rows = [{"ts": "2023-11-14T22:13:20.5Z", "id": {"orig_h": "fe80::1", "orig_p": 1,
             "resp_h": "fe80::2", "resp_p": 2}, "proto": "icmp"}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    df, _ = read_zeek_conn(p)
    assert df.row(0, named=True)["protocol"] == 58  # ICMPv6, which Zeek logs as "icmp"
    assert df["first_seen"][0].isoformat() == "2023-11-14T22:13:20.500000+00:00"


@pytest.mark.parametrize("header", ["ts\tuid\tproto", "ts,id.orig_h,id.resp_h", "ts"])
def test_zeek_cut_subsets_say_which_columns_are_missing(tmp_path, header):
    """62 zeek-cut column subsets got "not a pcap or pcapng capture"."""
    p = tmp_path / "subset.tsv"
    sep = "," if "," in header else "\t"
    p.write_text(header + "\n" + sep.join(["1"] * len(header.split(sep))) + "\n")
    r = CliRunner().invoke(app, ["extract", str(p), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 1 and "missing columns: " in r.output and "not a pcap" not in r.output


def test_rotated_logs_concatenated_and_ip_proto(tmp_path):
    """`cat` of rotated logs: header blocks with other #fields; Zeek 7's ip_proto wins."""
    p = tmp_path / "conn.log"
    sctp = ROW.replace("\t1.5\n", "\t1.5\t132\n").replace("\ttcp\t", "\tunknown_transport\t")
    p.write_text(HEAD + ROW + "#close\t2024-01-01-00-00-00\n"
                 + HEAD.replace("\tduration\n", "\tduration\tip_proto\n") + sctp)
    df, problems = read_zeek_conn(p)
    assert problems == [] and df["protocol"].to_list() == [6, 132]

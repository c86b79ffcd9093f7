"""`flockwatch datasets label`: whole-site captures plus a device table become a labelled set
with one device per labels.csv row, grouped by capture, that loads, windows and trains."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import small_pcap
from typer.testing import CliRunner

from flockwatch.serving.cli import app

TYPES = ["Aria", "HueBridge", "Withings"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sentinel_rows(shared: Path) -> list[dict[str, str]]:
    src = shared / "iot-sentinel"
    if not (src / "labels.csv").exists():
        pytest.skip(f"IoT Sentinel captures not found under {src}")
    with (src / "labels.csv").open() as fh:
        return list(csv.DictReader(fh))


def merged_sites(shared: Path, dest: Path) -> tuple[list[Path], dict[str, dict[str, str]]]:
    """Two "whole-site" captures, each the packets of one setup capture of three devices of
    different types merged in time order, and the IoT Sentinel rows of those devices by MAC."""
    from flockwatch.datasets.pcap import PcapWriter, read_pcap

    rows = sentinel_rows(shared)
    by_type = {t: [r for r in rows if r["device_type"] == t][:2] for t in TYPES}
    sites = []
    for i in range(2):
        w = PcapWriter()
        for t in TYPES:
            linktype, packets = read_pcap(shared / "iot-sentinel" / by_type[t][i]["path"])
            assert linktype == 1
            for ts, frame in packets:
                w.add(ts, frame)
        site = dest / f"site{i + 1}.pcap"
        w.write(site)
        sites.append(site)
    return sites, {by_type[t][0]["mac"]: by_type[t][0] for t in TYPES}


def devices_csv(path: Path, devices: dict[str, dict[str, str]]) -> Path:
    """The table in the shape published datasets use: upper-case MACs in three notations, the
    type in ``name``, a column flockwatch ignores, and a device no capture holds."""
    lines = ["MAC,name,category,vendor,room"]
    for i, (mac, r) in enumerate(sorted(devices.items())):
        digits = mac.replace(":", "").upper()
        shown = [mac.upper(), mac.replace(":", "-"),
                 f"{digits[:4]}.{digits[4:8]}.{digits[8:]}"][i % 3]
        lines.append(f"{shown},{r['device_type']},{r['category']},{r['vendor']},lab")
    lines.append("02:00:00:00:00:99,Ghost,camera,Nobody,attic")
    return write(path, "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, dict[str, str]]]:
    from conftest import data_dir

    if not data_dir().is_dir():
        pytest.skip(f"shared captures not found at {data_dir()} (set FLOCKWATCH_DATA)")
    return merged_sites(data_dir(), tmp_path_factory.mktemp("sites") / "captures")


def test_label_whole_site_captures_then_load_and_window(sites, tmp_path):
    from flockwatch.datasets.labelled import dataset_flows, labelled_windows, load_dataset
    from flockwatch.features.windows import WindowSpec

    captures, devices = sites
    table = devices_csv(tmp_path / "devices.csv", devices)
    out = tmp_path / "labelled"
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[0].parent), "--devices",
                                 str(table), "-o", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["captures"] == 2 and doc["rows"] == 6 and doc["problems"] == []
    assert doc["labels"] == str(out / "labels.csv")
    for cap in doc["devices_per_capture"]:
        assert [d["mac"] for d in cap["labelled"]] == sorted(devices)
        assert cap["devices_seen"] >= 3 and all(d["flows"] > 0 for d in cap["labelled"])
    # Exactly one row per (capture, listed MAC), paths relative to the output folder.
    with (out / "labels.csv").open() as fh:
        got = list(csv.DictReader(fh))
    want = [{"path": _rel(c, out), "device_type": devices[m]["device_type"], "mac": m,
             "category": devices[m]["category"], "vendor": devices[m]["vendor"],
             "group": _rel(c, out)}
            for c in captures for m in sorted(devices)]
    assert got == want
    assert all(row["path"].startswith("../") for row in got)
    # The folder loads as a dataset; each row's windows are its own device's only.
    ds = load_dataset(out)
    assert len(ds.captures) == 6 and ds.group_counts() == {t: 2 for t in TYPES}
    assert {c.path.resolve() for c in ds.captures} == {c.resolve() for c in captures}
    flows, problems = dataset_flows(ds)
    assert not [p for p in problems if p.severity == "error"]
    win = labelled_windows(ds, flows, WindowSpec(300.0))
    import polars as pl

    per_device = win.group_by("capture", "device_id").agg(
        pl.col("label").unique().alias("labels"), pl.col("group").unique().alias("groups"))
    assert per_device.height == 6
    for row in per_device.iter_rows(named=True):
        assert row["labels"] == [devices[row["device_id"]]["device_type"]]
        assert row["groups"] == [_rel(Path(row["capture"]), out)]


def _rel(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def test_label_table_output_and_problems(sites, tmp_path):
    """A capture where no listed device appears is listed, not fatal; an unreadable one is
    listed and makes the exit status 1 (as in extract), while the rest are labelled."""
    captures, devices = sites
    aria = {m: r for m, r in devices.items() if r["device_type"] == "Aria"}
    table = devices_csv(tmp_path / "devices.csv", aria)
    other = tmp_path / "other.pcap"
    from flockwatch.datasets.pcap import read_pcap
    from flockwatch.datasets.synth import synthesize_capture

    synthesize_capture(other, hours=0.1, seed=1)
    assert read_pcap(other)[1]
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[0]), str(other),
                                 "--devices", str(table), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 row -> " in r.output and "Traceback" not in r.output
    assert (f"notice: {str(other)!r}: none of the 2 devices in {table} appears" in r.output)
    assert len((out / "labels.csv").read_text().splitlines()) == 1 + 1
    bad = write(tmp_path / "broken.pcap", "not a capture at all")
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[1]), str(bad),
                                 "--devices", str(table), "-o", str(out), "-f", "json"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    doc = json.loads(r.stdout)
    assert doc["rows"] == 1 and [p["source"] for p in doc["problems"]] == [str(bad)]
    assert doc["problems"][0]["severity"] == "error"
    assert _rel(captures[1], out) in (out / "labels.csv").read_text()


def test_nothing_labelled_is_an_error(sites, tmp_path):
    captures, _ = sites
    table = write(tmp_path / "devices.csv", "mac,device_type\n02:00:00:00:00:99,Ghost\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[0]), "--devices", str(table),
                                 "-o", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.splitlines()[-1] == (
        f"flockwatch: error: {str(out / 'labels.csv')!r}: not written: no device of "
        f"{str(table)!r} appears in the 1 readable capture(s)")
    assert not (out / "labels.csv").exists()


@pytest.mark.parametrize(("table", "message"), [
    (None, "{t}: no such file"),
    ("name,device_type\ncam,camera\n", "{t}: no mac column (has name, device_type)"),
    ("mac,vendor\n00:11:22:33:44:55,Acme\n", "{t}: no device_type or name column (has mac, "
     "vendor)"),
    ("mac,device_type\n00:11:22:33:44:55,cam\n00:11:22:33:44,cam\n",
     "{t}, row 3: malformed MAC '00:11:22:33:44' (expected aa:bb:cc:dd:ee:ff, "
     "aa-bb-cc-dd-ee-ff or aabb.ccdd.eeff)"),
    ("mac,device_type\n00:11:22:33:44:5g,cam\n",
     "{t}, row 2: malformed MAC '00:11:22:33:44:5g' (expected aa:bb:cc:dd:ee:ff, "
     "aa-bb-cc-dd-ee-ff or aabb.ccdd.eeff)"),
    ("mac,device_type\n00:11:22:33:44:55,cam\n,plug\n", "{t}, row 3: empty mac"),
    ("mac,device_type\n00:11:22:33:44:55,cam\n00-11-22-33-44-55,plug\n",
     "{t}, row 3: MAC 00:11:22:33:44:55 is 'plug' here but 'cam' in row 2; a MAC is one device"),
    ("mac,name\n00:11:22:33:44:55,\n", "{t}, row 2: 00:11:22:33:44:55 has an empty name"),
    ("mac,device_type,category\n00:11:22:33:44:55,cam,camera\n00:11:22:33:44:56,cam,plug\n",
     "{t}: 'cam' has 2 category values (camera, plug); a type has one category"),
    ("mac,device_type\n", "{t}: no devices (the table has a header but no rows)"),
])
def test_bad_device_tables(tmp_path, table, message):
    """Each bad table is one line naming the file (and row), exit 1, before any capture is
    read (the capture here does not even exist)."""
    t = tmp_path / "devices.csv"
    if table is not None:
        write(t, table)
    r = CliRunner().invoke(app, ["datasets", "label", str(tmp_path / "missing.pcap"),
                                 "--devices", str(t), "-o", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output == f"flockwatch: error: {message.format(t=t)}\n"
    assert not (tmp_path / "out").exists()


def test_type_column_option(sites, tmp_path):
    """``--type-column`` picks the type from another column (here the vendor's model name);
    the same MAC listed twice with the same type is one device."""
    captures, devices = sites
    lines = ["mac,model,device_type"] + [f"{m},{r['device_type']}-v1,ignored" for m, r in
                                         sorted(devices.items())]
    table = write(tmp_path / "d.csv", "\n".join(lines + lines[1:2]) + "\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[0]), "--devices", str(table),
                                 "--type-column", "model", "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    with (out / "labels.csv").open() as fh:
        assert sorted(row["device_type"] for row in csv.DictReader(fh)) == [
            f"{t}-v1" for t in TYPES]
    r = CliRunner().invoke(app, ["datasets", "label", str(captures[0]), "--devices", str(table),
                                 "--type-column", "kind", "-o", str(out)])
    assert r.exit_code == 1 and r.output == (
        f"flockwatch: error: {table}: no kind column (has mac, model, device_type)\n")


def test_normalise_mac():
    from flockwatch.datasets.labelled import normalise_mac

    want = "00:1a:2b:3c:4d:5e"
    for text in ("00:1A:2B:3C:4D:5E", "00-1a-2b-3c-4d-5e", "001a.2b3c.4d5e", "001A2B3C4D5E",
                 " 00:1a:2b:3c:4d:5e "):
        assert normalise_mac(text) == want, text
    for text in ("", "00:1a:2b:3c:4d", "00:1a-2b:3c:4d:5e", "00:1a:2b:3c:4d:5g", "0:1:2:3:4:5"):
        assert normalise_mac(text) is None, text


def test_load_dataset_refuses_a_device_labelled_twice(tmp_path):
    """One labelled device per row: the same (capture, MAC) twice, or a MAC-less row beside
    rows of the same capture, would count windows twice; both are refused by row."""
    from flockwatch.datasets.labelled import DatasetError, load_dataset

    ds = tmp_path / "ds"
    small_pcap(ds / "a.pcap")
    write(ds / "labels.csv", "path,device_type,mac\na.pcap,plc,00:00:54:81:00:81\n"
                             "a.pcap,hmi,00:00:bc:91:00:91\na.pcap,plc,00-00-54-81-00-81\n")
    with pytest.raises(DatasetError, match=r"row 4: MAC 00:00:54:81:00:81 of capture "
                                           r"'a.pcap' is already labelled in row 2"):
        load_dataset(ds)
    write(ds / "labels.csv", "path,device_type,mac\na.pcap,plc,00:00:54:81:00:81\n"
                             "a.pcap,hmi,\n")
    with pytest.raises(DatasetError, match=r"row 3: no mac, but capture 'a.pcap' has 2 rows"):
        load_dataset(ds)


def test_single_capture_type_with_two_devices_is_refused(tmp_path):
    """Two devices of one type in one capture are one capture of that type: capture-separated
    validation cannot hold it out (counted per row, the check let it through)."""
    from flockwatch.datasets.synth import HOSTS

    cams = [h for h in HOSTS if h.device_type == "ip_camera"]
    plcs = [h for h in HOSTS if h.device_type == "plc"]
    assert len(cams) == 2 and len(plcs) == 2
    rows = [f"learning.pcap,ip_camera,{h.mac}" for h in cams]
    rows += [f"learning.pcap,plc,{plcs[0].mac}", f"attacks.pcap,plc,{plcs[1].mac}"]
    ds = tmp_path / "ds"
    small_pcap(ds / "learning.pcap")
    small_pcap(ds / "attacks.pcap")
    write(ds / "labels.csv", "path,device_type,mac\n" + "\n".join(rows) + "\n")
    r = CliRunner().invoke(app, ["train", "classifier", str(ds), "--quick"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "label(s) ip_camera have a single capture" in r.output


def test_train_and_evaluate_on_labelled_site(site, tmp_path):
    """The synthetic site's two captures (every host in each), labelled from a device table,
    train a classifier (real LightGBM, real MLflow store) that records each capture's devices;
    evaluate predicts per (capture, device)."""
    from flockwatch.datasets.synth import HOSTS
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import load_model

    lines = ["mac,device_type,category"] + [f"{h.mac},{h.device_type},{h.category}"
                                            for h in HOSTS]
    table = write(tmp_path / "devices.csv", "\n".join(lines) + "\n")
    out = tmp_path / "labelled"
    runner = CliRunner()
    r = runner.invoke(app, ["datasets", "label", str(site), "--devices", str(table), "-o",
                            str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert f"{2 * len(HOSTS)} rows -> " in r.output
    r = runner.invoke(app, ["train", "classifier", str(out), "--quick", "--register", "site",
                            "--early-seconds", "none", "-q"])
    assert r.exit_code == 0, r.output
    bundle = bundle_of(load_model("models:/site/1"))
    caps = bundle.info["training_captures"]
    assert sorted(Path(c["path"]).name for c in caps) == ["attacks.pcap", "learning.pcap"]
    for c in caps:
        assert sorted(d["mac"] for d in c["devices"]) == sorted(h.mac for h in HOSTS)
        assert c["label"] == ", ".join(sorted({h.device_type for h in HOSTS}))
    # Every capture seen in training: evaluate refuses, naming the dataset.
    r = runner.invoke(app, ["evaluate", str(out), "--model", "models:/site/1"])
    assert r.exit_code == 1 and "all 2 captures were used to train" in r.output
    # Another seed's site is held out: one prediction per (capture, device).
    from flockwatch.datasets.synth import synthesize

    other = synthesize(tmp_path / "other", hours=0.5, seed=23, attacks=[])
    assert len(other) == 1
    held = tmp_path / "held"
    r = runner.invoke(app, ["datasets", "label", str(other[0].path), "--devices", str(table),
                            "-o", str(held), "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", str(held), "--model", "models:/site/1"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    preds = doc["predictions"]
    assert sorted(p["mac"] for p in preds) == sorted(h.mac for h in HOSTS)
    assert {p["path"] for p in preds} == {_rel(other[0].path, held)}
    assert all(p["true"] == next(h.device_type for h in HOSTS if h.mac == p["mac"])
               for p in preds)
    assert doc["metrics"]["n"] == len(HOSTS)

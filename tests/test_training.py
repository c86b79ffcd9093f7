"""Train -> register -> load -> evaluate on real IoT Sentinel captures, in a real MLflow store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from flockwatch.serving.cli import app
from typer.testing import CliRunner

TYPES = ["Aria", "HueBridge", "WeMoLink", "Withings"]


def subset(shared: Path, dest: Path, types: list[str], per_type: int | None = None) -> Path:
    src = shared / "iot-sentinel"
    if not (src / "labels.csv").exists():
        pytest.skip(f"IoT Sentinel captures not found under {src}")
    dest.mkdir(parents=True, exist_ok=True)
    with (src / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["device_type"] in types]
    kept, count = [], {}
    for r in rows:
        count[r["device_type"]] = count.get(r["device_type"], 0) + 1
        if per_type and count[r["device_type"]] > per_type:
            continue
        folder = r["path"].split("/")[0]
        if not (dest / folder).exists():
            (dest / folder).symlink_to(src / folder)
        kept.append(r)
    with (dest / "labels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    return dest


@pytest.mark.slow
def test_train_register_load_evaluate(shared_data, tmp_path):
    import mlflow

    ds = subset(shared_data, tmp_path / "ds", TYPES)
    runner = CliRunner()
    r = runner.invoke(app, ["train", "classifier", str(ds), "--register", "sentinel",
                            "--promote", "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "models:/sentinel@champion" in r.output
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("sentinel", "champion")
    run = client.get_run(version.run_id)
    assert run.data.metrics["macro_f1"] > 0.8
    assert {"accuracy", "macro_f1", "unknown_auroc", "f1_Aria"} <= set(run.data.metrics)
    # Trained on the first seconds of each capture too: held-out captures are named early.
    assert run.data.params["early_seconds"] == "10,30,60"
    assert run.data.params["reject_quantile"] == "0.04"
    assert run.data.metrics["macro_f1_first_30s"] > 0.8
    assert "from the first seconds of each capture" in r.output
    assert run.data.params["dataset_hash"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "dataset.json", "feature_importance.json"} <= arts
    # Second run uses the flow cache: no re-extraction (cache files unchanged).
    out = tmp_path / "eval.json"
    png = tmp_path / "confusion.png"
    r = runner.invoke(app, ["evaluate", str(ds), "--model", "models:/sentinel@champion",
                            "-o", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(out.read_text())
    assert doc["metrics"]["macro_f1"] > 0.8
    assert set(doc["metrics"]["per_class"]) >= set(TYPES)
    p = doc["predictions"][0]
    assert set(p) == {"path", "mac", "true", "predicted", "confidence", "unknown"}
    assert len(doc["predictions"]) == 4 * 16
    # A type the model never saw counts as correct only when predicted unknown.
    other = subset(shared_data, tmp_path / "other", ["Lightify"], per_type=4)
    r = runner.invoke(app, ["evaluate", str(other), "--model", "models:/sentinel/1"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    for pred in doc["predictions"]:
        assert (pred["predicted"] == "unknown") == (pred["true"] == pred["predicted"]
                                                     or pred["unknown"])
    # The open-set trade-off re-decided at evaluation, without retraining: 0 never answers
    # unknown, a high quantile answers it at least as often as the model's own 0.04.
    assert doc["reject_quantile"] == 0.04
    unknown = {}
    for q in ("0", "0.5"):
        r = runner.invoke(app, ["evaluate", str(other), "--model", "models:/sentinel/1",
                                "--reject-quantile", q])
        assert r.exit_code == 0, r.output
        d = json.loads(r.stdout)
        assert d["reject_quantile"] == float(q)
        unknown[q] = sum(p["unknown"] for p in d["predictions"])
    assert unknown["0"] == 0
    assert unknown["0.5"] >= sum(p["unknown"] for p in doc["predictions"])
    r = runner.invoke(app, ["evaluate", str(other), "--model", "models:/sentinel/1",
                            "--reject-quantile", "1.5"])
    assert r.exit_code == 1 and "reject_quantile must be in [0, 1)" in r.output
    assert "Traceback" not in r.output


def write(p: Path, text: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


@pytest.mark.parametrize("labels,needle", [
    ("path,mac\nx.pcap,aa\n", "missing column(s) device_type"),
    ("path,device_type,mac\nmissing.pcap,cam,00:11:22:33:44:55\n", "row 2: capture"),
    ("", "missing column"),
])
def test_bad_datasets(tmp_path, labels, needle):
    ds = tmp_path / "ds"
    write(ds / "labels.csv", labels)
    r = CliRunner().invoke(app, ["train", "classifier", str(ds)])
    assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output


def test_bad_early_seconds(tmp_path):
    r = CliRunner().invoke(app, ["train", "classifier", str(tmp_path), "--early-seconds", "ten"])
    assert r.exit_code == 1 and "bad duration 'ten'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("value", ["1", "-0.1"])
def test_bad_reject_quantile(tmp_path, value):
    r = CliRunner().invoke(app, ["train", "classifier", str(tmp_path), "--reject-quantile", value])
    assert r.exit_code == 1 and f"--reject-quantile {float(value):g}: give a share in [0, 1)" \
        in r.output and "Traceback" not in r.output


def test_single_capture_label_and_wrong_mac(tmp_path, site):
    import shutil

    ds = tmp_path / "ds"
    ds.mkdir()
    shutil.copy(site / "learning.pcap", ds / "a.pcap")
    shutil.copy(site / "learning.pcap", ds / "b.pcap")
    write(ds / "labels.csv", "path,device_type,mac\na.pcap,plc,00:00:54:81:00:81\n"
                             "b.pcap,plc,00:00:54:81:00:81\na.pcap,hmi,00:00:bc:91:00:91\n")
    r = CliRunner().invoke(app, ["train", "classifier", str(ds)])
    assert r.exit_code == 1 and "hmi have a single capture" in r.output
    write(ds / "labels.csv", "path,device_type,mac\na.pcap,plc,00:00:54:81:00:81\n"
                             "b.pcap,plc,00:00:54:81:00:81\na.pcap,hmi,00:00:bc:91:00:91\n"
                             "b.pcap,hmi,de:ad:be:ef:00:01\n")
    r = CliRunner().invoke(app, ["train", "classifier", str(ds)])
    assert r.exit_code == 1 and "de:ad:be:ef:00:01 never appears" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["train", "classifier", str(empty)])
    assert r.exit_code == 1 and "empty dataset" in r.output
    import mlflow

    assert not mlflow.MlflowClient().search_registered_models()  # nothing half-registered


def test_evaluate_bad_model_uri(tmp_path, site):
    write(tmp_path / "ds" / "labels.csv", "path,device_type\n")
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "ds"), "--model", "models:/ghost/1"])
    assert r.exit_code == 1 and "models:/ghost/1" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_train_baseline_cli_and_flags_scan(site, tmp_path):
    """A baseline learnt on the normal site flags the injected scan and not normal traffic."""
    import json

    import polars as pl

    runner = CliRunner()
    r = runner.invoke(app, ["train", "baseline", str(site / "learning.pcap"), "--window", "120s",
                            "--register", "site", "--promote", "--epochs", "40"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "r.json"
    r = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", "models:/site@champion",
                            "--format", "json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    truth = pl.read_csv(site / "attacks.csv").filter(pl.col("kind") == "port_scan").row(
        0, named=True)
    scan = [a for a in doc["alerts"] if a["mac"] == truth["mac"] and a["start"] <= truth["end"]
            and a["end"] >= truth["start"]]
    assert scan, "the port scan raised no alert on the scanning camera"
    # Modbus writes from a host that never spoke Modbus to the PLC: a new-peer alert, high.
    writes = pl.read_csv(site / "attacks.csv").filter(pl.col("kind") == "modbus_write").row(
        0, named=True)
    new_peer = [a for a in doc["alerts"] if a["kind"] == "new_peer"
                and a["device_id"] == "00:00:54:81:00:81"
                and any(p.startswith(f"{writes['ip']}:") for p in a["new_peers"])]
    assert new_peer and new_peer[0]["severity"] == "high" and "Modbus" in new_peer[0]["message"]
    assert new_peer[0]["start"] <= writes["end"] and new_peer[0]["end"] >= writes["start"]
    w = pl.DataFrame(doc["windows"])
    first_attack = min(pl.read_csv(site / "attacks.csv")["start"].to_list())
    before = w.filter(pl.col("end") < first_attack)
    assert before.height >= 30
    assert before["anomalous"].mean() < 0.05  # normal traffic rarely alerts
    # MLflow round trip: the registered model scores identically to the trained one.
    r2 = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", "models:/site/1",
                             "--format", "json"])
    assert json.loads(r2.stdout)["windows"] == doc["windows"]

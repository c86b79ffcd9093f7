"""Train -> register -> load -> evaluate on real IoT Sentinel captures, in a real MLflow store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import small_pcap
from typer.testing import CliRunner

from flockwatch.serving.cli import app

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
    """The held-out route: split, train on train, evaluate on test; evaluating on captures the
    model was trained on reports them apart and warns, and on nothing but them refuses."""
    import mlflow

    from flockwatch.training.classifier import PHASES

    ds = subset(shared_data, tmp_path / "ds", TYPES)
    runner = CliRunner()
    r = runner.invoke(app, ["datasets", "split", str(ds), "-o", str(tmp_path / "split")])
    assert r.exit_code == 0, r.output
    train, test = tmp_path / "split" / "train", tmp_path / "split" / "test"
    n_train = len((train / "labels.csv").read_text().splitlines()) - 1
    n_test = len((test / "labels.csv").read_text().splitlines()) - 1
    assert n_train + n_test == 4 * 16 and n_test == 4 * 4
    r = runner.invoke(app, ["train", "classifier", str(train), "--register", "sentinel",
                            "--promote", "--folds", "3"])
    assert r.exit_code == 0, r.output
    assert "models:/sentinel@champion" in r.output
    # A progress bar per phase, each to its end (training itself never prints).
    bars = [line.split("  ")[0] for line in r.output.splitlines() if "━" in line]
    assert bars == list(PHASES)
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("sentinel", "champion")
    run = client.get_run(version.run_id)
    assert run.data.metrics["macro_f1"] > 0.8
    assert {"accuracy", "macro_f1", "unknown_auroc", "f1_Aria"} <= set(run.data.metrics)
    # Trained on the first seconds of each capture too: held-out captures are named early.
    assert run.data.params["early_seconds"] == "10,30,60"
    assert run.data.params["reject_quantile"] == "0.04"
    assert run.data.params["training_captures"] == str(n_train)
    assert run.data.metrics["macro_f1_first_30s"] > 0.8
    assert "from the first seconds of each capture" in r.output
    assert run.data.params["dataset_hash"]
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "dataset.json", "feature_importance.json",
            "training_captures.json"} <= arts
    # Held-out captures: nothing seen in training, nothing to warn about.
    out = tmp_path / "eval.json"
    png = tmp_path / "confusion.png"
    r = runner.invoke(app, ["evaluate", str(test), "--model", "models:/sentinel@champion",
                            "-o", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output and f"on {n_test} held-out captures" in r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    doc = json.loads(out.read_text())
    assert doc["metrics"]["macro_f1"] > 0.8 and doc["metrics"]["n"] == n_test
    assert doc["seen_in_training"] is None and doc["leakage_checked"] is True
    assert set(doc["metrics"]["per_class"]) >= set(TYPES)
    p = doc["predictions"][0]
    assert set(p) == {"path", "mac", "true", "predicted", "confidence", "unknown",
                      "seen_in_training", "category", "category_confidence", "vendor",
                      "vendor_confidence", "candidates"}
    # the three levels, evaluated: category and vendor against the labels, the sets' coverage
    m = doc["metrics"]
    assert m["category_accuracy"] >= 0.9 and m["vendor_accuracy"] >= 0.9
    assert 0.8 <= m["set_coverage"] <= 1 and 1 <= m["mean_set_size"] <= 2
    assert m["coverage_stated"] == 0.95
    assert all(p["predicted"] in p["candidates"] for p in doc["predictions"]
               if not p["unknown"])
    assert len(doc["predictions"]) == n_test
    assert not any(p["seen_in_training"] for p in doc["predictions"])
    # The whole set: the training captures are reported apart, with a one-line warning, and
    # the main figures are the held-out ones (today's main printed them all as one).
    r = runner.invoke(app, ["evaluate", str(ds), "--model", "models:/sentinel/1"])
    assert r.exit_code == 0, r.output
    warning = (f"flockwatch: warning: {ds}: {n_train} of {4 * 16} captures were used to train "
               "this model; reported apart")
    assert warning in r.output.splitlines()
    whole = json.loads(r.stdout)
    assert whole["metrics"]["n"] == n_test
    assert whole["metrics"]["macro_f1"] == doc["metrics"]["macro_f1"]
    assert whole["seen_in_training"]["captures"] == n_train
    assert whole["seen_in_training"]["metrics"]["n"] == n_train
    assert sum(p["seen_in_training"] for p in whole["predictions"]) == n_train
    assert whole["warnings"] == [warning.removeprefix("flockwatch: warning: ")]
    # Nothing but training captures: refused, in one line, pointing at `datasets split`.
    r = runner.invoke(app, ["evaluate", str(train), "--model", "models:/sentinel/1"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert f"all {n_train} captures were used to train models:/sentinel/1" in r.output
    assert "flockwatch datasets split" in r.output
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
    assert r.exit_code == 1 and "--reject-quantile 1.5: give a share in [0, 1)" in r.output
    assert "Traceback" not in r.output
    # --quick: skips the report's models, and the model is the same one.
    r = runner.invoke(app, ["train", "classifier", str(train), "--register", "sentinel",
                            "--folds", "3", "--quick"])
    assert r.exit_code == 0, r.output
    bars = [line.split("  ")[0] for line in r.output.splitlines() if "━" in line]
    assert bars == ["extracting flows", "windows", "product evidence", "cross-fitting",
                    "calibration", "final fit", "category model", "evidence profiles",
                    "prediction sets", "logging to MLflow"]
    assert "no cross-validation or open-set figures" in r.output
    quick_run = client.get_run(client.get_model_version("sentinel", "2").run_id)
    assert not quick_run.data.metrics
    for key in ("best_iteration", "temperature", "evidence_threshold", "set_threshold",
                "evidence_sharpness", "training_captures"):
        assert quick_run.data.params[key] == run.data.params[key], key
    r = runner.invoke(app, ["evaluate", str(test), "--model", "models:/sentinel/2"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["predictions"] == doc_predictions(out)


def doc_predictions(path: Path) -> list[dict[str, object]]:
    return json.loads(path.read_text())["predictions"]


@pytest.mark.slow
def test_evaluate_warns_when_the_model_keeps_no_record(shared_data, tmp_path):
    """A model trained before training captures were recorded: leakage cannot be checked,
    and evaluate says so in one line instead of passing its figures off as held-out."""
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.pyfunc import save_model
    from flockwatch.models.store import load_model

    ds = subset(shared_data, tmp_path / "ds", ["Aria", "HueBridge"], per_type=4)
    runner = CliRunner()
    r = runner.invoke(app, ["train", "classifier", str(ds), "--quick", "--register", "tiny",
                            "--early-seconds", "none"])
    assert r.exit_code == 0, r.output
    bundle = bundle_of(load_model("models:/tiny/1"))
    assert len(bundle.info["training_captures"]) == 8
    assert all(len(c["sha256"]) == 64 for c in bundle.info["training_captures"])
    del bundle.info["training_captures"]
    save_model(bundle, tmp_path / "old-model")
    r = runner.invoke(app, ["evaluate", str(ds), "--model", str(tmp_path / "old-model")])
    assert r.exit_code == 0, r.output
    assert (f"flockwatch: warning: {tmp_path / 'old-model'}: the model does not record its "
            "training captures") in r.output
    assert "leakage cannot be checked" in r.output
    doc = json.loads(r.stdout)
    assert doc["leakage_checked"] is False and doc["metrics"]["n"] == 8


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
    assert r.output.startswith("flockwatch: error: ") and r.output.count("\n") == 1


def test_bad_early_seconds(tmp_path):
    r = CliRunner().invoke(app, ["train", "classifier", str(tmp_path), "--early-seconds", "ten"])
    assert r.exit_code == 1 and "bad duration 'ten'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("value", ["1", "-0.1"])
@pytest.mark.parametrize("command", [["train", "classifier"], ["evaluate", "--model", "x"]])
def test_bad_reject_quantile(tmp_path, value, command):
    """One check, one message, in both commands that take the option (evaluate's used to
    come from the model, in other words), before any model or capture is read."""
    r = CliRunner().invoke(app, [*command, str(tmp_path), "--reject-quantile", value])
    assert r.exit_code == 1 and r.output == (f"flockwatch: error: --reject-quantile "
                                             f"{float(value):g}: give a share in [0, 1)\n")


def test_single_capture_label_and_wrong_mac(tmp_path):
    ds = tmp_path / "ds"
    for name in ("a.pcap", "b.pcap"):  # an HMI polling a PLC, three packets
        small_pcap(ds / name, a=("00:00:bc:91:00:91", "192.168.10.91"),
                   b=("00:00:54:81:00:81", "192.168.10.81"))
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


def test_evaluate_bad_model_uri(tmp_path):
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
    # ... and a risk finding: the baseline learnt the PLC's masters, the writer is not one
    found = [f for f in doc["findings"] if f["kind"] == "industrial_write"
             and f["device_id"] == "00:00:54:81:00:81"]
    assert found and writes["ip"] in found[0]["message"] and "learnt: " in found[0]["message"]
    w = pl.DataFrame(doc["windows"])
    first_attack = min(pl.read_csv(site / "attacks.csv")["start"].to_list())
    before = w.filter(pl.col("end") < first_attack)
    assert before.height >= 30
    assert before["anomalous"].mean() < 0.05  # normal traffic rarely alerts
    # MLflow round trip: the registered model scores identically to the trained one.
    r2 = runner.invoke(app, ["score", str(site / "attacks.pcap"), "-m", "models:/site/1",
                             "--format", "json"])
    assert json.loads(r2.stdout)["windows"] == doc["windows"]

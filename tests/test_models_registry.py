"""`flockwatch models list|promote|describe` against a real MLflow store (tmp dir), with
models really trained on IoT Sentinel captures and on the synthetic site."""

from __future__ import annotations

import json

import pytest
from test_training import subset
from typer.testing import CliRunner

from flockwatch.models.bundle import bundle_of
from flockwatch.models.store import ModelLoadError, load_model
from flockwatch.serving.cli import app


@pytest.fixture
def two_versions(shared_data, tmp_path):
    """Two registered versions of one classifier (quick training on 2 types, 4 captures
    each), no alias."""
    ds = subset(shared_data, tmp_path / "ds", ["Aria", "HueBridge"], per_type=4)
    runner = CliRunner()
    for seed in ("0", "1"):
        r = runner.invoke(app, ["train", "classifier", str(ds), "--quick", "--register",
                                "cams", "--early-seconds", "none", "--seed", seed])
        assert r.exit_code == 0, r.output
    return ds


@pytest.mark.slow
def test_promote_then_load_by_alias(two_versions):
    runner = CliRunner()
    # Before promotion the alias names nothing: one line that lists the versions and says
    # how to promote one (today: "alias champion not found", no hint).
    with pytest.raises(ModelLoadError) as exc:
        load_model("models:/cams@champion")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "versions: 1, 2" in msg
    assert "flockwatch models promote models:/cams/2 --alias champion" in msg
    r = runner.invoke(app, ["evaluate", str(two_versions), "--model", "models:/cams@champion"])
    assert r.exit_code == 1 and "versions: 1, 2" in r.output and "Traceback" not in r.output
    # Promote version 1 without retraining, then load by alias: it is version 1's model.
    r = runner.invoke(app, ["models", "promote", "models:/cams/1", "--alias", "champion"])
    assert r.exit_code == 0, r.output
    assert "models:/cams@champion -> version 1" in r.output
    by_alias = bundle_of(load_model("models:/cams@champion"))
    v1 = bundle_of(load_model("models:/cams/1"))
    assert by_alias.created == v1.created
    # Move it to version 2: the output says which version it named before.
    r = runner.invoke(app, ["models", "promote", "models:/cams/2"])
    assert r.exit_code == 0, r.output
    assert "models:/cams@champion -> version 2 (was version 1)" in r.output
    v2 = bundle_of(load_model("models:/cams/2"))
    assert bundle_of(load_model("models:/cams@champion", use_cache=False)).created == v2.created
    # Another alias names the versions with their aliases.
    with pytest.raises(ModelLoadError, match=r"versions: 1, 2 \(@champion\)"):
        load_model("models:/cams@staging")
    # Promote what does not exist: one line naming what does.
    r = runner.invoke(app, ["models", "promote", "models:/cams/7"])
    assert r.exit_code == 1 and "has no version 7 (versions: 1, 2 (@champion))" in r.output
    r = runner.invoke(app, ["models", "promote", "models:/ghost/1"])
    assert r.exit_code == 1 and "no registered model 'ghost' (registered: cams" in r.output
    r = runner.invoke(app, ["models", "promote", "runs:/abc/model"])
    assert r.exit_code == 1 and "give models:/NAME/VERSION" in r.output
    r = runner.invoke(app, ["models", "promote", "models:/cams/1", "--alias", "latest"])
    assert r.exit_code == 1 and "not 'latest'" in r.output


@pytest.mark.slow
def test_list_and_describe(two_versions, site):
    runner = CliRunner()
    r = runner.invoke(app, ["train", "baseline", str(site / "learning.pcap"), "--window",
                            "120s", "--learning-period", "1h", "--epochs", "3",
                            "--register", "site", "--promote"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["models", "list", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["name"], x["version"]) for x in rows] == [("cams", 1), ("cams", 2),
                                                          ("site", 1)]
    kinds = {(x["name"], x["version"]): x["kind"] for x in rows}
    assert kinds == {("cams", 1): "classifier", ("cams", 2): "classifier",
                     ("site", 1): "baseline"}
    from flockwatch.features.windows import FEATURE_SET_VERSION

    assert {x["feature_set_version"] for x in rows} == {FEATURE_SET_VERSION}
    assert rows[2]["aliases"] == ["champion"] and rows[0]["aliases"] == []
    assert all(x["created"] and x["created"].endswith("+00:00") for x in rows)
    table = runner.invoke(app, ["models", "list"])
    assert table.exit_code == 0
    for needle in ("cams", "site", "@champion", "classifier", "baseline",
                   f"v{FEATURE_SET_VERSION}"):
        assert needle in table.stdout
    only = json.loads(runner.invoke(app, ["models", "list", "cams", "-f", "json"]).stdout)
    assert {x["name"] for x in only} == {"cams"}
    # describe a classifier: parameters, training captures count
    r = runner.invoke(app, ["models", "describe", "models:/cams/2", "--format", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["kind"] == "classifier" and d["version"] == 2 and d["training_captures"] == 8
    assert d["params"]["seed"] == "1" and d["params"]["quick"] == "True"
    text = runner.invoke(app, ["models", "describe", "models:/cams/2"]).stdout
    assert "training captures:  8" in text and "kind:               classifier" in text
    # describe a baseline by alias: its learning period and metrics
    r = runner.invoke(app, ["models", "describe", "models:/site@champion", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["kind"] == "baseline" and d["aliases"] == ["champion"]
    assert d["learning"] and "3600" in json.dumps(d["learning"])
    assert d["metrics"]["devices"] > 0
    text = runner.invoke(app, ["models", "describe", "models:/site@champion"]).stdout
    assert "learning:" in text and "metrics:" in text
    r = runner.invoke(app, ["models", "describe", "models:/site@nope"])
    assert r.exit_code == 1 and "flockwatch models promote models:/site/1 --alias nope" \
        in r.output
    r = runner.invoke(app, ["models", "list", "ghost"])
    assert r.exit_code == 1 and "no registered model 'ghost'" in r.output


def test_models_help():
    runner = CliRunner()
    r = runner.invoke(app, ["models", "--help"])
    assert r.exit_code == 0
    for cmd in ("list", "promote", "describe"):
        assert cmd in r.output
    assert "--alias" in runner.invoke(app, ["models", "promote", "--help"]).output
    assert "--format" in runner.invoke(app, ["models", "describe", "--help"]).output
    assert "--format" in runner.invoke(app, ["models", "list", "--help"]).output
    r = runner.invoke(app, ["train", "classifier", "--help"])
    assert "--quick" in r.output and "--jobs" in r.output


def test_no_models_registered():
    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 0 and "no registered models" in r.output


@pytest.mark.parametrize("args", [["models", "list"], ["models", "describe", "models:/x/1"],
                                  ["models", "promote", "models:/x/1"]])
def test_registry_down_is_one_line(args, monkeypatch):
    """A tracking server that refuses connections (a closed loopback port) ends in one error
    line naming the store, not in MLflow's traceback."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    r = CliRunner().invoke(app, [*args, "--tracking-uri", "http://127.0.0.1:9"])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flockwatch: error: http://127.0.0.1:9:")
    assert "Traceback" not in r.output

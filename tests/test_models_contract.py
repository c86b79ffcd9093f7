"""One contract suite for every estimator (STYLE.md 4)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pytest

from flockwatch.features.windows import FEATURE_COLUMNS
from flockwatch.models import BaselineAutoencoder, DeviceClassifier, NotFittedError
from flockwatch.models.base import clone, get_params
from flockwatch.models.identity import DeviceIdentifier, EvidenceModel
from flockwatch.models.peers import PeerBaseline
from flockwatch.models.thresholds import QuantileThreshold


def synthetic_windows(n_per_class: int = 40, classes: int = 3, seed: int = 0) -> pl.DataFrame:
    """Windows whose class shifts a few features: a task with a known answer."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(classes):
        X = rng.normal(0, 1, (n_per_class, len(FEATURE_COLUMNS)))
        X[:, c * 3:(c * 3) + 3] += 3.0
        for i, x in enumerate(X):
            rows.append({"device_id": f"dev{c}-{i % 4}", "label": f"type{c}",
                         "group": f"cap{c}-{i % 4}", **dict(zip(FEATURE_COLUMNS, x, strict=True))})
    df = pl.DataFrame(rows)
    start = pl.datetime(2026, 1, 1, time_zone="UTC") + pl.duration(
        seconds=pl.int_range(0, df.height) * 300)
    return df.with_columns(start.alias("start"), pl.lit("s").alias("source"))


def fit(est, df):
    if isinstance(est, DeviceClassifier):
        return est.fit(df, df["label"], df["group"])
    return est.fit(df)


def output(est, df) -> np.ndarray:
    if isinstance(est, DeviceClassifier):
        return est.predict_proba(df)
    return est.score(df)


ESTIMATORS = [
    lambda: DeviceClassifier(n_estimators=60, seed=1),
    lambda: BaselineAutoencoder(epochs=15, hidden=(16, 4), seed=1),
]


@pytest.fixture(params=ESTIMATORS, ids=["classifier", "baseline"])
def est(request):
    return request.param()


# -- the contract every estimator in models/ keeps ------------------------------------------
def _peer_flows(rows: list[tuple[str, str, int, int]]) -> pl.DataFrame:
    """Attributed UDP flows (device, local peer, service port, minute): each one opens a
    conversation (``initiation``) and is no scan probe."""
    t0 = pl.datetime(2026, 1, 1, time_zone="UTC")
    df = pl.DataFrame(rows, schema=["device_id", "peer_ip", "dst_port", "minute"], orient="row")
    return df.with_columns(
        pl.lit("s").alias("source"), pl.lit(True).alias("peer_local"),
        pl.lit(17).alias("protocol"), pl.lit(40000).alias("src_port"),
        pl.lit(2).alias("packets"), pl.lit(1).alias("dst2src_packets"),
        pl.lit(0).alias("rst_packets"), pl.lit(0).alias("syn_packets"),
        pl.lit(0).alias("ack_packets"),
        (t0 + pl.duration(minutes=pl.col("minute") // 5 * 5)).alias("start"),
        (t0 + pl.duration(minutes=pl.col("minute") // 5 * 5 + 5)).alias("end"),
    ).drop("minute")


PEERS_LEARN = _peer_flows([("plc", "10.0.0.2", 502, 0), ("cam", "10.0.0.5", 554, 1)])
#: the PLC's known Modbus peer, a new SSH peer of the PLC in two windows, a device never seen
PEERS_TEST = _peer_flows([("plc", "10.0.0.2", 502, 10), ("plc", "10.0.0.3", 22, 11),
                          ("plc", "10.0.0.3", 22, 16), ("stranger", "10.0.0.9", 80, 12)])

_rng = np.random.default_rng(0)
SCORES = np.exp(_rng.normal(-2, 0.5, 120))
SCORE_DEVICES = [f"d{i % 3}" for i in range(120)]
#: product evidence of each synthetic type (``synthetic_windows``): vendor, cloud, DHCP list
TOKENS = {f"type{c}": [f"oui:Vendor{c % 2}", f"domain:cloud{c}.com", "dhcp_prl:1,3,6"]
          for c in range(3)}
EV_TOKENS = [TOKENS[f"type{c}"][: 2 + i % 2] for c in range(3) for i in range(4)]
EV_LABELS = [f"type{c}" for c in range(3) for _ in range(4)]


def _identifier_fit(est: DeviceIdentifier) -> DeviceIdentifier:
    df = synthetic_windows()
    # half the captures show no DHCP list: the held-out similarities spread, and the open-set
    # bar sits below a device showing all of its type's evidence
    evidence = {(g, lab): [TOKENS[lab][: 2 if g.endswith(("-0", "-1")) else 3]]
                for g, lab in df.select("group", "label").unique().iter_rows()}
    return est.fit(df, df["label"], df["group"], evidence,
                   categories={"type0": "plug", "type1": "camera", "type2": "plug"},
                   vendors={f"type{c}": f"Vendor{c % 2}" for c in range(3)})


def _identifier_out(est: DeviceIdentifier) -> pl.DataFrame:
    df = synthetic_windows(seed=1)
    ev = df.select("source", "device_id", "label").unique().sort("device_id").with_columns(
        pl.col("label").replace_strict(TOKENS, return_dtype=pl.List(pl.String))
        .alias("evidence")).drop("label")
    return est.predict_devices(df, evidence=ev).sort("source", "device_id")


@dataclass
class Case:
    """One estimator: how to make it, fit it on its learning data and get its output."""

    make: Callable[[], Any]
    fit: Callable[[Any], Any]
    output: Callable[[Any], Any]
    shape: tuple[int, ...]  # of the output on the case's data


N = synthetic_windows().height
CASES = {
    "classifier": Case(lambda: DeviceClassifier(n_estimators=60, seed=1),
                       lambda e: fit(e, synthetic_windows()),
                       lambda e: e.predict_proba(synthetic_windows()), (N, 3)),
    "baseline": Case(lambda: BaselineAutoencoder(epochs=15, hidden=(16, 4), seed=1),
                     lambda e: fit(e, synthetic_windows()),
                     lambda e: e.score(synthetic_windows()), (N,)),
    "threshold": Case(lambda: QuantileThreshold(q=0.99, floor=0.1),
                      lambda e: e.fit(SCORES, SCORE_DEVICES),
                      lambda e: e.threshold(["d0", "d1", "d2", "never-seen"]), (4,)),
    "peers": Case(PeerBaseline, lambda e: e.fit(PEERS_LEARN),
                  lambda e: e.new_peers(PEERS_TEST).sort("start"), (2, 6)),
    "evidence": Case(EvidenceModel, lambda e: e.fit(EV_TOKENS, EV_LABELS, sorted(TOKENS)),
                     lambda e: e.similarity([*EV_TOKENS, ["oui:Other"], []])[0],
                     (len(EV_TOKENS) + 2, 3)),
    "identifier": Case(lambda: DeviceIdentifier(seed=1, calibration_folds=2,
                                                behaviour_params={"n_estimators": 30}),
                       _identifier_fit, _identifier_out, (12, 14)),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request) -> Case:
    return CASES[request.param]


@pytest.fixture(scope="module")
def fitted_case(case) -> tuple[Case, Any]:
    return case, case.fit(case.make())


def assert_same(a: Any, b: Any) -> None:
    if isinstance(a, pl.DataFrame):
        assert a.equals(b), (a, b)
    else:
        np.testing.assert_array_equal(a, b)


def test_params_stored_unchanged_and_clone(case):
    est = case.make()
    params = get_params(est)
    assert get_params(clone(est)) == params
    assert all(not k.endswith("_") for k in params)


def test_not_fitted_error(case):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        case.output(case.make())


def test_fit_returns_self_and_output_shape(fitted_case):
    case, est = fitted_case
    assert isinstance(est, type(case.make()))
    assert case.output(est).shape == case.shape


def test_same_seed_same_result(fitted_case):
    case, est = fitted_case
    assert_same(case.output(est), case.output(case.fit(case.make())))


def test_pickle_round_trip(fitted_case):
    case, est = fitted_case
    assert_same(case.output(est), case.output(pickle.loads(pickle.dumps(est))))


def test_peer_baseline_reports_new_peers_of_known_devices_only():
    out = CASES["peers"].output(CASES["peers"].fit(PeerBaseline()))
    assert out["device_id"].to_list() == ["plc", "plc"]
    assert out["new_peers"].to_list() == [["10.0.0.3:22"], ["10.0.0.3:22"]]


def test_identifier_answers_by_evidence():
    """Each synthetic device's evidence names its type: the identifier answers it, with its
    category and vendor."""
    out = CASES["identifier"].output(CASES["identifier"].fit(CASES["identifier"].make()))
    want = out["device_id"].str.extract(r"dev(\d)").map_elements(lambda c: f"type{c}",
                                                                 return_dtype=pl.String)
    assert (out["device_type"] == want).all(), out
    assert out["vendor"].to_list() == [f"Vendor{int(c[-1]) % 2}" for c in want]


def test_column_order_does_not_matter(est):
    df = synthetic_windows()
    fitted = fit(est, df)
    shuffled = df.select(list(reversed(df.columns)))
    np.testing.assert_allclose(output(fitted, df), output(fitted, shuffled))


def test_better_than_chance(est):
    train, test = synthetic_windows(seed=0), synthetic_windows(seed=1)
    fitted = fit(est, train)
    if isinstance(est, DeviceClassifier):
        acc = np.mean(fitted.predict(test) == np.asarray(test["label"].to_list()))
        assert acc > 0.8
    else:
        normal = fitted.score(test)
        odd = test.with_columns(pl.col(FEATURE_COLUMNS[-1]) + 8.0,
                                pl.col(FEATURE_COLUMNS[-2]) - 8.0)
        anomalous = fitted.score(odd)
        assert np.mean(anomalous > np.median(normal)) > 0.9  # higher score = more anomalous
        assert np.mean(anomalous > fitted.thresholds(odd["device_id"].to_list())) > 0.8


def test_mlflow_save_load_identical(est, tmp_path):
    import mlflow

    from flockwatch.features.windows import WindowSpec
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import FlockwatchModel, save_model

    df = synthetic_windows()
    fitted = fit(est, df)
    bundle = Bundle(window=WindowSpec(300), **{
        "classifier" if isinstance(est, DeviceClassifier) else "baseline": fitted})
    save_model(bundle, tmp_path / "m")
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m")).unwrap_python_model()
    assert isinstance(loaded, FlockwatchModel)
    part = loaded.bundle.classifier or loaded.bundle.baseline
    np.testing.assert_array_equal(output(fitted, df), output(part, df))


def test_bundle_pickles_by_its_module_and_loads(tmp_path):
    """A bundle (and the baseline's threshold object) is pickled by its module path: what
    this flockwatch saves, it loads, and scores the same; a bundle of another feature set or
    a pickle that is no bundle is refused."""
    import pickletools

    import mlflow

    from flockwatch.features.windows import FEATURE_SET_VERSION, WindowSpec
    from flockwatch.models.bundle import (
        Bundle,
        bundle_of,
        check_feature_set,
        load_bundle,
        save_bundle,
    )
    from flockwatch.models.pyfunc import save_model

    df = synthetic_windows()
    base = BaselineAutoencoder(epochs=3, hidden=(16, 4), seed=1).fit(df)
    bundle = Bundle(window=WindowSpec(300), baseline=base)
    save_bundle(bundle, tmp_path / "b.pkl")
    ops = {str(arg) for _, arg, _ in pickletools.genops((tmp_path / "b.pkl").read_bytes())}
    assert {"flockwatch.models.bundle", "Bundle", "flockwatch.models.thresholds",
            "QuantileThreshold"} <= ops
    again = load_bundle(tmp_path / "b.pkl")
    assert isinstance(again, Bundle) and again.info["feature_set_version"] == FEATURE_SET_VERSION
    np.testing.assert_array_equal(again.baseline.score(df), base.score(df))
    save_model(bundle, tmp_path / "m")
    loaded = bundle_of(mlflow.pyfunc.load_model(str(tmp_path / "m")))
    np.testing.assert_array_equal(loaded.baseline.score(df), base.score(df))
    bundle.info["feature_set_version"] = FEATURE_SET_VERSION - 1
    with pytest.raises(ValueError, match=f"feature set v{FEATURE_SET_VERSION - 1}.*retrain"):
        check_feature_set(bundle)
    save_bundle(bundle, tmp_path / "old.pkl")
    with pytest.raises(ValueError, match="retrain it"):
        load_bundle(tmp_path / "old.pkl")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"window": 300}))
    with pytest.raises(TypeError, match="not a flockwatch bundle"):
        load_bundle(tmp_path / "x.pkl")


def test_bad_input_types(est):
    with pytest.raises(TypeError):
        fit(est, object())
    df = synthetic_windows().drop(FEATURE_COLUMNS[0])
    with pytest.raises(ValueError, match=FEATURE_COLUMNS[0]):
        fit(est, df)


def test_baseline_explanations_json_equals_records():
    """The column-wise JSON that pyfunc outputs says exactly what ``explain`` says."""
    import json

    df = synthetic_windows()
    est = BaselineAutoencoder(epochs=5, hidden=(16, 4), seed=1).fit(df)
    dev = est.deviations(df, top=5)
    scores, records = est.explain(df, top=5)
    np.testing.assert_array_equal(dev.scores, scores)
    assert [json.loads(s) for s in dev.json()] == records
    assert all(len(r) == 5 and r[0]["share"] >= r[-1]["share"] for r in records)
    # Non-finite numbers are not JSON: they come out as null, and the string still parses.
    dev.observed[0, 0] = np.inf
    assert json.loads(dev.json()[0])[0]["observed"] is None
    assert est.deviations(df.head(0)).json().len() == 0
    # a few windows (a REST request) take json.dumps, the same after parsing
    from flockwatch.models.deviations import SMALL_JSON

    assert df.height > SMALL_JSON
    few = est.deviations(df.head(30), top=5)
    assert few.json().name == dev.json().name == "top_features"
    assert [json.loads(s) for s in few.json()] == records[:30]
    few.observed[0, 0] = np.nan
    assert json.loads(few.json()[0])[0]["observed"] is None


def test_classifier_device_decision_is_per_device_aggregate():
    """``predict_devices`` (vectorised over devices) decides each device from the mean of its
    windows' probabilities and the median novelty of its windows, whatever the row order."""
    df = synthetic_windows(60, 4)
    clf = DeviceClassifier(n_estimators=60, seed=1).fit(df, df["label"], df["group"])
    df = df.sample(fraction=1.0, shuffle=True, seed=3)
    out = clf.predict_devices(df, by=("device_id",))
    assert out.height == df["device_id"].n_unique()
    from flockwatch.models.base import feature_matrix

    X = feature_matrix(df, clf.feature_names_)
    p = clf.predict_proba(df, X)
    for row in out.iter_rows(named=True):
        m = (df["device_id"] == row["device_id"]).to_numpy()
        agg = p[m].mean(axis=0)
        nov = float(np.median(clf._novelty(X[m], np.full(int(m.sum()), agg.argmax()))))
        label, conf, unknown = clf.decide(agg[None], np.array([nov]))
        assert (row["device_type"], row["unknown"]) == (label[0], unknown[0])
        assert row["type_confidence"] == pytest.approx(conf[0], abs=1e-12)


def test_classifier_rejection_retunes_without_refitting():
    """``set_reject_quantile`` moves only the open-set thresholds, from the held-out
    confidences and novelties that ``fit`` kept: 0 never answers unknown, higher values
    reject more, and the fitted value gives back exactly the fitted thresholds."""
    df = synthetic_windows(60, 4)
    clf = DeviceClassifier(n_estimators=60, seed=1).fit(df, df["label"], df["group"])
    fitted = (clf.threshold_, clf.novelty_threshold_)
    n_cal = len(clf.calibration_confidence_)
    assert n_cal == len(clf.calibration_novelty_) > 0
    new = synthetic_windows(60, 4, seed=5)  # devices the model never saw
    rejected = []
    for q in (0.0, 0.1, 0.5, 0.9):
        clf.set_reject_quantile(q)
        assert clf.reject_quantile == q
        rejected.append(int(clf.predict_devices(new, by=("device_id",))["unknown"].sum()))
        # The rule rejects about q of the held-out devices it was calibrated on (each half
        # is a quantile of n_cal values: within a device or so of q / 2).
        would = ((clf.calibration_confidence_ < clf.threshold_)
                 | (clf.calibration_novelty_ > clf.novelty_threshold_)).mean()
        assert q / 2 - 1 / n_cal <= would <= q + 2 / n_cal
    assert rejected[0] == 0 and rejected == sorted(rejected) and rejected[-1] > 0
    clf.set_reject_quantile(0.04)
    assert (clf.threshold_, clf.novelty_threshold_) == fitted
    with pytest.raises(ValueError, match=r"reject_quantile must be in \[0, 1\)"):
        clf.set_reject_quantile(1.0)


def test_numpy_forward_pass_is_the_torch_network():
    """Scoring runs the fitted layers on numpy (``models.forward``): the same output as the
    torch network they came from, to float32 precision."""
    import torch

    from flockwatch.models.forward import forward, to_layers

    df = synthetic_windows()
    est = BaselineAutoencoder(epochs=3, hidden=(16, 4), seed=1).fit(df)
    module = est._build(len(est.feature_names_))
    linears = [m for m in module if isinstance(m, torch.nn.Linear)]
    weights = [(w, b) for kind, w, b in est.net_ if kind == "linear"]
    assert len(linears) == len(weights)
    for m, (w, b) in zip(linears, weights, strict=True):
        m.weight.data = torch.from_numpy(w.T.copy())
        m.bias.data = torch.from_numpy(b.copy())
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(to_layers(module), est.net_,
                                                         strict=True) if a[0] == "linear")
    Z = np.random.default_rng(0).normal(0, 2, (50, len(est.feature_names_))).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(Z)).numpy()
    np.testing.assert_allclose(forward(est.net_, Z), ref, atol=1e-5)
    np.testing.assert_array_equal(est._reconstruct(Z), forward(est.net_, Z))


def test_threshold_floor_holds_for_tiny_and_pooled_scores():
    """A device whose scores are all tiny (traffic like clockwork) gets the floor, not a
    threshold fitted to noise; devices too thin for their own threshold get the pooled one,
    also never below the floor; without a floor the fitted tail applies."""
    from flockwatch.models.thresholds import QuantileThreshold

    rng = np.random.default_rng(0)
    tiny = np.exp(rng.normal(-9, 1.5, 200))  # ~1e-4, a very regular device
    wide = np.exp(rng.normal(-2, 0.5, 200))
    scores = np.concatenate([tiny, wide, [0.05, 0.06]])
    devs = ["hub"] * 200 + ["cam"] * 200 + ["thin"] * 2
    free = QuantileThreshold(q=0.999, margin=1.5).fit(tiny, ["hub"] * 200)
    assert free.threshold(["hub"])[0] < 0.1  # the tail alone alerts on tiny deviations
    floored = QuantileThreshold(q=0.999, margin=1.5, floor=1.0).fit(tiny, ["hub"] * 200)
    assert floored.threshold(["hub"])[0] == 1.0
    floored = QuantileThreshold(q=0.999, margin=1.5, floor=1.0).fit(scores, devs)
    t = dict(zip(["hub", "cam", "thin", "never-seen"],
                 floored.threshold(["hub", "cam", "thin", "never-seen"]), strict=True))
    assert min(t.values()) >= 1.0
    assert t["thin"] == t["never-seen"] == floored.pooled_
    assert t["cam"] == max(floored._quantile(wide) * 1.5, floored.pooled_)
    est = BaselineAutoencoder(epochs=5, hidden=(16, 4), seed=1, threshold_floor=2.5)
    df = synthetic_windows()
    assert np.all(est.fit(df).thresholds(df["device_id"].unique().to_list()) >= 2.5)


def test_baseline_learning_status():
    """Devices with enough held-back windows get their own threshold ("learned"); a device
    seen a handful of times is "thin" (site-wide threshold); one never seen is "new"."""
    df = synthetic_windows(n_per_class=200, classes=1)  # dev0-0 .. dev0-3: 50 windows each
    few = synthetic_windows(n_per_class=8, classes=1, seed=1).with_columns(
        pl.lit("camera").alias("device_id"))
    est = BaselineAutoencoder(epochs=3, hidden=(16, 4), seed=1, holdout_fraction=0.6).fit(
        pl.concat([df, few.select(df.columns)]))
    n, state = est.learning_status(["dev0-0", "camera", "stranger"])
    assert n == [50, 8, None]
    assert state == ["learned", "thin", "new"]
    assert est.thresholds(["camera"])[0] == est.threshold_rule_.pooled_


def test_open_set_rule_compares_at_the_calibration_precision():
    """Held-out confidences are kept as float32: when 2 % of them are 0.9999999994, the
    threshold is 1.0, and a device predicted with that very confidence is no "unknown"
    (before, every device of a well-separated 4-type IoT Sentinel subset was)."""
    clf = DeviceClassifier()
    clf.calibration_confidence_ = np.full(50, 0.9999999994, dtype=np.float32)
    clf.calibration_novelty_ = np.linspace(0.0, 1.0, 50).astype(np.float32)
    clf.set_reject_quantile(0.04)
    assert clf.threshold_ == 1.0
    assert not clf.rejects(np.array([0.9999999994]), np.array([0.0])).any()
    assert clf.rejects(np.array([0.5]), np.array([0.0])).all()


def test_type_contributions_name_the_features_and_evidence_behind_the_type():
    """Why a device is its type: behaviour's TreeSHAP contributions name the features its
    class shifts (features 3c..3c+2 for type c), and the identifier puts the product evidence
    that matches the type's profile first, its domain (one type's) above its DHCP list (all
    types'). Type 1's OUI is as rare as its domain (an equal share): equal shares come out in
    the tokens' order, the same under every hash seed (CI once drew a seed that put the OUI
    first)."""
    df = synthetic_windows()
    clf = DeviceClassifier(n_estimators=60, seed=1).fit(df, df["label"], df["group"])
    types = df.select("source", "device_id", pl.col("label").alias("nearest_type")).unique()
    out = clf.type_contributions(df, types).sort("device_id")
    assert out.height == types.height
    for r in out.iter_rows(named=True):
        c = int(r["device_id"][3])
        own = set(FEATURE_COLUMNS[c * 3:c * 3 + 3])
        names = [e["name"] for e in r["type_evidence"]]
        assert all(e["kind"] == "behaviour" and e["weight"] > 0 for e in r["type_evidence"])
        assert len(own & set(names[:3])) >= 2, (c, names)
        assert [e["weight"] for e in r["type_evidence"]] == sorted(
            (e["weight"] for e in r["type_evidence"]), reverse=True)
    ident = _identifier_fit(DeviceIdentifier(seed=1, calibration_folds=2,
                                             behaviour_params={"n_estimators": 30}))
    ev = types.with_columns(pl.col("nearest_type").replace_strict(
        TOKENS, return_dtype=pl.List(pl.String)).alias("evidence")).drop("nearest_type")
    both = ident.type_contributions(df, types, evidence=ev)
    for r in both.iter_rows(named=True):
        c = int(r["device_id"][3])
        kinds = [e["kind"] for e in r["type_evidence"]]
        assert kinds[0] == "evidence" and "behaviour" in kinds
        assert kinds == sorted(kinds, key=lambda k: k != "evidence")  # evidence leads
        first = r["type_evidence"][0]
        assert first["name"] == f"domain:cloud{c}.com" and first["label"] == "cloud domain"
        assert "dhcp_prl:1,3,6" not in [e["name"] for e in r["type_evidence"]][:1]

"""``--cluster``: a real Dask LocalCluster of two worker processes gives what the in-process
run gives (flows row for row, windows, the score report, a classifier as good), a worker
killed mid-extraction changes nothing, and an unreachable scheduler fails in one line."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import free_port
from typer.testing import CliRunner

from flockwatch.serving.cli import app

pytestmark = pytest.mark.cluster



# -- without a cluster ----------------------------------------------------------------------

def test_parse_cluster() -> None:
    from flockwatch.features.cluster import ClusterError, parse_cluster

    assert parse_cluster("local:2").local_workers == 2
    assert parse_cluster("local").local_workers == (os.cpu_count() or 1)
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster("tls://[::1]:8786/").address == "tls://[::1]:8786"
    for bad in ("", "local:0", "local:x", "10.0.0.5:8786", "http://h:1", "tcp://h", "tcp://h:0"):
        with pytest.raises(ClusterError):
            parse_cluster(bad)


def test_plan_batches_groups_small_and_isolates_large() -> None:
    from flockwatch.features.cluster import plan_batches

    mb = 1 << 20
    sizes = [1 * mb] * 5 + [200 * mb] + [1 * mb] * 3
    assert plan_batches(sizes, batch_bytes=64 * mb, batch_files=4) == [
        [0, 1, 2, 3], [4], [5], [6, 7, 8]]
    assert plan_batches([], batch_bytes=10) == []
    # every input in exactly one task, in order
    got = [i for b in plan_batches([3, 9, 1, 1, 12, 2], batch_bytes=10, batch_files=3) for i in b]
    assert got == list(range(6))


def test_unreachable_scheduler_fails_in_one_line(tmp_path: Path) -> None:
    cap = tmp_path / "x.pcap"
    cap.write_bytes(b"")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["inventory", str(cap), "--cluster", address])
    assert time.monotonic() - t0 < 15
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"flockwatch: error: --cluster {address}: ")
    assert "Traceback" not in r.output
    # the environment variable is the same switch
    r = CliRunner().invoke(app, ["inventory", str(cap)], env={"FLOCKWATCH_CLUSTER": "nowhere"})
    assert r.exit_code == 1 and "expected tcp://HOST:PORT" in r.output


def test_connect_gives_up_after_its_timeout() -> None:
    """A scheduler that accepts TCP but never speaks Dask: ClusterError after the timeout,
    not a hang."""
    from flockwatch.features.cluster import ClusterError, connect

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="within 2 s"), \
                connect(f"tcp://127.0.0.1:{srv.getsockname()[1]}", timeout=2):
            pass
        assert time.monotonic() - t0 < 10
    finally:
        srv.close()


# -- on a LocalCluster of 2 worker processes --------------------------------------------------

@pytest.fixture(scope="module")
def client():
    from flockwatch.features.cluster import connect

    with connect("local:2") as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def captures(shared_data_module: Path) -> list[str]:
    root = shared_data_module / "iot-sentinel"
    files = sorted(str(p) for p in root.glob("*/*.pcap"))
    # a few of several types, small and quick
    return [f for f in files if "/Aria/" in f or "/HueSwitch/" in f or "/EdimaxPlug1101W/" in f]


@pytest.fixture(scope="module")
def shared_data_module() -> Path:
    from conftest import data_dir

    d = data_dir()
    if not (d / "iot-sentinel").is_dir():
        pytest.skip(f"shared captures not found at {d} (set FLOCKWATCH_DATA)")
    return d


def test_extraction_equals_in_process_row_for_row(client, captures, tmp_path: Path) -> None:
    from flockwatch.features.cluster import extract_on
    from flockwatch.features.flows import extract

    bad = tmp_path / "broken.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\0" * 3)
    srcs = [*captures, str(bad)]
    here = extract(srcs)
    seen: list[str] = []
    there = extract_on(client, srcs, on_file=seen.append)
    assert here.flows.height > 100
    assert there.flows.equals(here.flows)
    assert there.files == here.files
    # the bad file's problem came back from its worker, into the one list
    assert [str(p) for p in there.problems] == [str(p) for p in here.problems]
    assert any(p.source == str(bad) and p.severity == "error" for p in there.problems)
    assert sorted(seen) == sorted(srcs)


def test_extract_to_partitioned_dataset(client, captures, tmp_path: Path) -> None:
    """``extract -o FOLDER --cluster tcp://...``: the workers write one part per capture and
    day; read back it is the in-process flow table, row for row."""
    from flockwatch.features.flows import extract
    from flockwatch.features.flowset import MARKER, read_flowset

    out = tmp_path / "flows"
    address = client.scheduler.address
    r = CliRunner().invoke(app, ["extract", *captures, "-o", str(out), "--cluster", address])
    assert r.exit_code == 0, r.output
    assert f"-> {out} (partitioned by capture and day)" in r.output
    assert (out / MARKER).is_file()
    parts = sorted(out.glob("capture=*/day=*/part-0.parquet"))
    assert len(parts) >= len(captures)
    assert not list(tmp_path.glob(".flows.*"))  # no staging left behind
    assert not list(out.rglob(".*.tmp"))
    here = extract(captures).flows
    assert read_flowset(out).equals(here)
    # hive-partitioned readers see capture and day as columns
    scanned = pl.scan_parquet(str(out / "capture=*/day=*/*.parquet"),
                              hive_partitioning=True).collect()
    assert scanned.height == here.height and {"capture", "day"} <= set(scanned.columns)
    # a rerun replaces the dataset whole; a folder of other files is refused
    r = CliRunner().invoke(app, ["extract", captures[0], "-o", str(out), "--cluster", address])
    assert r.exit_code == 0, r.output
    assert read_flowset(out).equals(extract([captures[0]]).flows)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    r = CliRunner().invoke(app, ["extract", captures[0], "-o", str(other)])
    assert r.exit_code == 1 and "folder holds other files" in r.output
    assert (other / "keep.txt").read_text() == "mine"


def test_in_process_dataset_output_is_the_same(captures, tmp_path: Path) -> None:
    from flockwatch.features.flows import extract
    from flockwatch.features.flowset import read_flowset

    out = tmp_path / "flows"
    r = CliRunner().invoke(app, ["extract", *captures[:4], "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert read_flowset(out).equals(extract(captures[:4]).flows)


def test_killed_worker_mid_extraction(client, shared_data_module: Path) -> None:
    """A worker process killed while it reads a capture: Dask runs its task again and the
    batch gives the in-process flows, row for row."""
    from flockwatch.features.cluster import bound, map_files, worker_pids
    from flockwatch.features.flows import extract, read_source_file

    files = sorted(str(p) for p in (shared_data_module / "long-term-iot").glob("*/*.pcap"))
    assert len(files) >= 3
    before = worker_pids(client)
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = map_files(client, bound(read_source_file), files, batch_files=1)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and t.is_alive():
        busy = [w for w, keys in client.processing().items() if keys]
        if busy:
            killed = busy[0]
            os.kill(before[killed], signal.SIGKILL)
        time.sleep(0.02)
    t.join(300)
    assert killed is not None, "no task was seen running"
    assert "error" not in out, out.get("error")
    client.wait_for_workers(2, timeout=60)
    assert before[killed] not in worker_pids(client).values()  # that process is gone
    results = out["result"]
    assert isinstance(results, list)
    got = pl.concat([df for df, _ in results])
    assert got.equals(extract(files).flows)


def test_windows_on_workers_equal(client, captures) -> None:
    from flockwatch.features.cluster import windows_on
    from flockwatch.features.flows import extract
    from flockwatch.features.windows import WindowSpec, windows

    flows = extract(captures).flows
    spec = WindowSpec(60)
    assert windows_on(client, flows, spec).equals(windows(flows, spec))


def test_classifier_dask_path_matches_in_process(client, captures) -> None:
    """The final fit through ``lightgbm.dask`` on the two workers: a model as good as the
    in-process one (macro F1 within 0.005 on held-out captures) and still an ordinary
    booster inside the same classifier."""
    import lightgbm as lgb

    from flockwatch.features.flows import extract
    from flockwatch.features.windows import WindowSpec, windows
    from flockwatch.models.classifier import DeviceClassifier
    from flockwatch.training.distributed import choose_trainer
    from flockwatch.training.metrics import classification_metrics

    flows = extract(captures).flows
    win = windows(flows, WindowSpec(10)).with_columns(
        pl.col("source").str.split("/").list.get(-2).alias("label"))
    test_src = sorted({s for s in win["source"].unique().to_list() if s.endswith("-2-STA.pcap")})
    train = win.filter(~pl.col("source").is_in(test_src))
    test = win.filter(pl.col("source").is_in(test_src))
    assert test.height and train["label"].n_unique() == 3

    def fitted(trainer):
        return DeviceClassifier(n_estimators=60, reject_quantile=0.0).fit(
            train, train["label"], train["source"], trainer=trainer)

    assert choose_trainer(client, train.height) is None  # small: in-process by default
    trainer = choose_trainer(client, train.height, min_windows=0)
    assert trainer is not None
    local, dist = fitted(None), fitted(trainer)
    assert isinstance(dist.booster_, lgb.Booster)
    f1 = [classification_metrics(test["label"].to_list(), m.predict(test).tolist())["macro_f1"]
          for m in (local, dist)]
    assert f1[0] > 0.5
    assert abs(f1[0] - f1[1]) <= 0.005, f1


@pytest.fixture(scope="module")
def model_dir(site, tmp_path_factory):
    """Classifier + baseline on the synthetic site, one pyfunc folder (as test_serving's)."""
    from flockwatch.datasets.synth import HOSTS
    from flockwatch.features import WindowSpec, extract, windows
    from flockwatch.models import DeviceClassifier
    from flockwatch.models.bundle import Bundle
    from flockwatch.models.pyfunc import save_model
    from flockwatch.training.baseline import fit_baseline

    flows = extract([site / "learning.pcap"]).flows
    baseline, _ = fit_baseline(flows, window_s=300, epochs=20)
    win = windows(flows, WindowSpec(300))
    types = {h.mac: h.device_type for h in HOSTS}
    win = win.filter(pl.col("device_id").is_in(list(types)))
    clf = DeviceClassifier(n_estimators=40).fit(
        win, win["device_id"].replace_strict(types), win["start"].cast(pl.String))
    path = tmp_path_factory.mktemp("model") / "model"
    save_model(Bundle(window=WindowSpec(300), classifier=clf, baseline=baseline), path)
    return path


def test_score_on_cluster_gives_the_same_json(client, site, model_dir, captures) -> None:
    srcs = [str(site / "learning.pcap"), str(site / "attacks.pcap"), *captures[:6]]
    base = ["score", *srcs, "-m", str(model_dir), "--format", "json", "-q"]
    here = CliRunner().invoke(app, base)
    assert here.exit_code == 0, here.output
    there = CliRunner().invoke(app, [*base, "--cluster", client.scheduler.address])
    assert there.exit_code == 0, there.output
    assert '"alerts"' in here.stdout and '"windows"' in here.stdout
    assert there.stdout == here.stdout


def test_stratified_parts_hold_every_class() -> None:
    import numpy as np

    from flockwatch.training.distributed import stratified_parts

    y = np.array([0] * 10 + [1] * 3 + [2] * 7)  # sorted by class, as windows come
    order, sizes = stratified_parts(y, 4)
    assert len(sizes) == 3 and sum(sizes) == len(y)  # the rarest class has 3 windows
    assert sorted(order.tolist()) == list(range(len(y)))
    start = 0
    for n in sizes:
        assert set(y[order[start:start + n]].tolist()) == {0, 1, 2}
        start += n


def test_train_and_evaluate_on_cluster(client, shared_data_module: Path, tmp_path: Path) -> None:
    """``train classifier --cluster`` with the Dask final fit forced: captures read and
    windows computed on the workers, the same pyfunc registered, and on held-out captures
    a macro F1 within 0.005 of the in-process model's; ``evaluate --cluster`` reads them
    there too."""
    import json

    import mlflow
    from test_training import subset

    ds = subset(shared_data_module, tmp_path / "ds", ["Aria", "HueSwitch", "EdimaxPlug1101W"],
                per_type=8)
    runner = CliRunner()
    r = runner.invoke(app, ["datasets", "split", str(ds), "-o", str(tmp_path / "split")])
    assert r.exit_code == 0, r.output
    train, test = tmp_path / "split" / "train", tmp_path / "split" / "test"
    address = client.scheduler.address
    f1 = {}
    for name, extra in (("here", []), ("there", ["--cluster", address,
                                                 "--dask-min-windows", "0"])):
        r = runner.invoke(app, ["train", "classifier", str(train), "--quick", "-q",
                                "--early-seconds", "30", "--register", name, *extra])
        assert r.exit_code == 0, r.output
        version = mlflow.MlflowClient().get_model_version(name, "1")
        params = mlflow.MlflowClient().get_run(version.run_id).data.params
        assert params["final_fit"] == ("in-process" if name == "here" else "lightgbm.dask")
        out = tmp_path / f"{name}.json"
        r = runner.invoke(app, ["evaluate", str(test), "-m", f"models:/{name}/1", "-o",
                                str(out), *extra[:2]])
        assert r.exit_code == 0, r.output
        f1[name] = json.loads(out.read_text())["metrics"]["macro_f1"]
    assert f1["here"] > 0.5
    assert abs(f1["here"] - f1["there"]) <= 0.005, f1


def test_baselines_per_site_on_cluster(client, tmp_path: Path) -> None:
    """``train baseline --per-site --cluster``: each site fitted on a worker (client.map),
    each its own registered model, with the devices and windows of the in-process fit."""
    import mlflow

    from flockwatch.datasets.synth import synthesize_capture

    srcs = []
    for name, seed in (("learning", 1), ("attacks", 2)):
        synthesize_capture(tmp_path / f"{name}.pcap", hours=0.5, seed=seed)
        srcs.append(str(tmp_path / f"{name}.pcap"))
    runner = CliRunner()
    got = {}
    for reg, extra in (("here", []), ("there", ["--cluster", client.scheduler.address])):
        r = runner.invoke(app, ["train", "baseline", *srcs, "--per-site", "--epochs", "3",
                                "--register", reg, *extra])
        assert r.exit_code == 0, r.output
        got[reg] = sorted(line.split(";")[0] for line in r.output.splitlines()
                          if "learning windows" in line)
        for name in ("learning", "attacks"):
            assert mlflow.MlflowClient().get_registered_model(f"{reg}-{name}")
    assert len(got["here"]) == 2 and got["here"] == got["there"]


def _child() -> None:
    return None


def _daemon(allow: bool) -> None:
    import multiprocessing as mp

    from flockwatch.features.cluster import allow_children

    if allow:
        allow_children()
    p = mp.get_context("fork").Process(target=_child)
    p.start()  # refused in a daemonic process unless allowed
    p.join()


@pytest.mark.parametrize("allow", [False, True])
def test_a_daemonic_worker_may_start_nfstream_meters(allow: bool) -> None:
    """A remote cluster's nanny starts daemonic workers, and NFStream meters in child
    processes: ``allow_children`` (run before every read on a worker) lets it."""
    import multiprocessing as mp

    p = mp.get_context("fork").Process(target=_daemon, args=(allow,), daemon=True)
    p.start()
    p.join(60)
    assert (p.exitcode == 0) is allow


def test_local_cluster_from_the_environment(captures, tmp_path: Path) -> None:
    """``FLOCKWATCH_CLUSTER=local:1``: the command starts its own LocalCluster, says where
    its dashboard is, and writes the in-process flow table."""
    from flockwatch.features.flows import extract

    out = tmp_path / "flows.parquet"
    r = CliRunner().invoke(app, ["extract", *captures[:3], "-o", str(out)],
                           env={"FLOCKWATCH_CLUSTER": "local:1"})
    assert r.exit_code == 0, r.output
    assert "cluster local:1: 1 worker(s); dashboard http://127.0.0.1:" in r.output
    assert pl.read_parquet(out).equals(extract(captures[:3]).flows)

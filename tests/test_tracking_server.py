"""The shared tracking server: a real PostgreSQL (initdb/pg_ctl in a temp dir, as an
unprivileged user), a real `flockwatch tracking-server` (MLflow's server) on 127.0.0.1 over
it, and the real CLI training, registering, promoting and scoring through it; then the
faults: a database or a server that does not answer, and a sensor whose registry is down.

Skipped, with the reason, where PostgreSQL is not installed (`.ci/run` installs Debian's)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

pytestmark = pytest.mark.server
FLOCKWATCH = str(Path(sys.executable).parent / "flockwatch")
PG_PASSWORD = "fw-s3cret"  # the superuser's, for host connections (scram-sha-256)



def postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's server programs (initdb, pg_ctl), else those on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The installed `flockwatch` in its own process, as a user runs it (this test's
    FLOCKWATCH_HOME, from the environment)."""
    return subprocess.run([FLOCKWATCH, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("flockwatch: error: ")
    return lines[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own in a temp dir, run by `nobody` when the tests run as
    root (PostgreSQL refuses root), listening on 127.0.0.1 only; yields the URI of its
    database `mlflow`, with the superuser's password."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                    "apt-get install postgresql, as .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="flockwatch-pg-"))
    as_user: dict[str, Any] = {}
    pwfile = root / "pwfile"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for p in (root, pwfile):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    log = root / "server.log"

    def run(*cmd: str | Path) -> None:
        with open(root / "commands.log", "a") as out:
            r = subprocess.run([str(c) for c in cmd], cwd=root, stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, timeout=180, **as_user)
        if r.returncode != 0:
            logs = "\n".join(p.read_text(errors="replace")[-2000:]
                             for p in (root / "commands.log", log) if p.exists())
            pytest.fail(f"{Path(cmd[0]).name} failed ({r.returncode}):\n{logs}")

    port = free_port()
    data = root / "data"
    started = False
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "-E", "UTF8", "--locale=C",
            "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "120", "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start")
        started = True
        import psycopg

        admin = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}"
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE mlflow")
        yield f"{admin}/mlflow"
    finally:
        if started:
            run(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    artifacts: Path
    log: Path

    def stop(self) -> None:
        """SIGTERM to the server's process group (mlflow server and its workers), then
        SIGKILL if it has not gone within 30 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def tracking_server(store: str, artifacts: Path, log: Path) -> Iterator[Server]:
    """`flockwatch tracking-server` on a free loopback port over ``store``, until /health
    answers; stopped on leaving."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [FLOCKWATCH, "tracking-server", "--backend-store-uri", store,
             "--artifacts-destination", str(artifacts), "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, artifacts, log)
    try:
        deadline = time.monotonic() + 180  # MLflow creates its tables on the first start
        while not healthy(server.url):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tracking server did not start (exit {proc.poll()}):\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("tracking")
    with tracking_server(postgres, base / "artifacts", base / "server.log") as s:
        yield s


@pytest.fixture(scope="session")
def champion(server: Server, site: Path) -> str:
    """`models:/flockwatch@champion` on the server: a baseline trained on the synthetic site
    with the tracking URI, registered, then promoted with `models promote`."""
    r = cli("train", "baseline", str(site / "learning.pcap"), "--epochs", "5",
            "--register", "flockwatch", "--tracking-uri", server.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "models:/flockwatch/1"
    r = cli("models", "promote", "models:/flockwatch/1", "--tracking-uri", server.url)
    assert r.returncode == 0, r.stderr
    assert "models:/flockwatch@champion -> version 1" in r.stdout
    return "models:/flockwatch@champion"


def score_json(capture: Path, model: str, tracking_uri: str, out: Path
               ) -> tuple[dict[str, Any], str]:
    r = cli("score", str(capture), "--model", model, "--tracking-uri", tracking_uri,
            "--format", "json", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r.stderr


def test_train_register_promote_and_score_through_the_server(
        server: Server, postgres: str, champion: str, site: Path, tmp_path: Path,
        isolated_home: Path) -> None:
    import psycopg

    # The run, the registered version and its alias are rows in PostgreSQL...
    with psycopg.connect(postgres) as db:
        runs = db.execute("SELECT status FROM runs").fetchall()
        versions = db.execute("SELECT name, version FROM model_versions").fetchall()
        aliases = db.execute("SELECT name, alias, version FROM registered_model_aliases"
                             ).fetchall()
    assert ("FINISHED",) in runs
    assert ("flockwatch", 1) in versions
    assert aliases == [("flockwatch", "champion", 1)]
    # ...the model's files are in the server's artifact folder, uploaded through the server:
    # the client kept no store or artifacts of its own.
    [mlmodel] = [p for p in server.artifacts.rglob("MLmodel")
                 if (p.parent / "artifacts" / "bundle.pkl").exists()]
    assert not (isolated_home / "mlflow.db").exists()
    assert not (isolated_home / "artifacts").exists()

    # `models list` reads the registry through the server.
    r = cli("models", "list", "--format", "json", "--tracking-uri", server.url)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    assert (row["name"], row["version"], row["aliases"], row["kind"]) == (
        "flockwatch", 1, ["champion"], "baseline")

    # Scoring loads models:/flockwatch@champion through the server: the same report as
    # scoring the model folder the server stored.
    attacks = site / "attacks.pcap"
    via_server, _ = score_json(attacks, champion, server.url, tmp_path / "server.json")
    direct, _ = score_json(attacks, str(mlmodel.parent), server.url, tmp_path / "local.json")
    assert via_server["model"] == champion
    for key in ("devices", "windows", "alerts", "incidents"):
        assert via_server[key] == direct[key], key
    assert via_server["devices"] and via_server["windows"] and via_server["alerts"]
    # The scoring copy is cached for the day the registry is down.
    assert (isolated_home / "model-cache").is_dir()


def test_registry_down_sensor_keeps_its_cached_model(
        postgres: str, server: Server, champion: str, site: Path, tmp_path: Path) -> None:
    """A second server over the same database and artifacts: load through it, stop it, then
    score and sense with the model cached by the load, as a sensor does when its registry
    is down."""
    from flockwatch.models.bundle import bundle_of
    from flockwatch.models.store import configure, load_model
    from flockwatch.serving.sensor import Sensor

    attacks = site / "attacks.pcap"
    with tracking_server(postgres, server.artifacts, tmp_path / "s.log") as s:
        url = s.url
        before, _ = score_json(attacks, champion, url, tmp_path / "before.json")
    assert not healthy(url)

    # `score`: the cached model, said so in the log, the same report.
    after, err = score_json(attacks, champion, url, tmp_path / "after.json")
    assert "using cached copy" in err and url in err
    for key in ("devices", "windows", "alerts"):
        assert after[key] == before[key], key

    # The sensor's own load and scoring path: load_model falls back to the cache, and the
    # sensor scores a chunk (a copy of the capture, as its capture thread writes one) with it.
    configure(url)
    model = load_model(champion)
    sensor = Sensor("lo", model, alerts_path=tmp_path / "alerts.jsonl")
    chunk = tmp_path / "chunk-000000.pcap"
    shutil.copy(attacks, chunk)
    sensor._process(chunk)
    sensor.jsonl.close()
    assert sensor.counters.windows > 0 and sensor.counters.alerts > 0
    lines = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    alerts = [a for a in lines if "start" in a]  # risk findings share the file
    assert len(alerts) == sensor.counters.alerts
    assert len(lines) - len(alerts) == sensor.counters.findings
    assert bundle_of(model).created is not None

    # The real `flockwatch sense` starts on the cached model and runs (root: it captures).
    if os.geteuid() != 0:
        return
    r = cli("sense", "-i", "lo", "--duration", "3", "--model", champion, "--tracking-uri", url,
            "--alerts", str(tmp_path / "sense.jsonl"), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "using cached copy" in r.stderr
    assert "stopped: packets=" in r.stderr


def test_unreachable_server_is_one_line(site: Path, tmp_path: Path) -> None:
    """No MLflow server at the URI: train, score and models fail in one line naming it,
    after one short probe (MLflow's own client retries for minutes). `train` says so before
    reading its input: an empty capture gives the server's error, not the input's."""
    url = f"http://127.0.0.1:{free_port()}"
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    for args in (["train", "baseline", str(empty), "--register", "x"],
                 ["train", "classifier", str(tmp_path), "--register", "x"],
                 ["score", str(site / "attacks.pcap"), "--model", "models:/flockwatch@champion"],
                 ["models", "list"]):
        line = one_error_line(cli(*args, "--tracking-uri", url, timeout=120))
        assert line.startswith(f"flockwatch: error: {url}: MLflow tracking server unreachable "
                               "(connection refused)"), line


@pytest.mark.parametrize(("uri", "problem"), [
    ("postgresql://fw:{pw}@127.0.0.1:{port}/mlflow",
     "cannot connect to the database: connection failed: connection to server at "
     '"127.0.0.1", port {port} failed: Connection refused'),
    ("postgres://fw:{pw}@127.0.0.1:{port}/mlflow", "write postgresql://"),
    ("http://fw:{pw}@127.0.0.1:{port}/", "not a database MLflow can use"),
])
def test_unreachable_or_bad_store_is_one_line(uri: str, problem: str, tmp_path: Path) -> None:
    port = free_port()
    uri = uri.format(pw="hunter2", port=port)
    r = cli("tracking-server", "--backend-store-uri", uri, "--artifacts-destination",
            str(tmp_path / "art"), "--port", str(free_port()), timeout=60)
    line = one_error_line(r)
    shown = uri.replace("hunter2", "***")
    assert line.startswith(f"flockwatch: error: {shown}: {problem.format(port=port)}"), line
    assert "hunter2" not in r.stderr + r.stdout


def test_wrong_password_and_busy_port(postgres: str, server: Server, tmp_path: Path) -> None:
    wrong = postgres.replace(PG_PASSWORD, "wrong-password")
    line = one_error_line(cli("tracking-server", "--backend-store-uri", wrong,
                              "--artifacts-destination", str(tmp_path / "art"),
                              "--port", str(free_port()), timeout=60))
    assert "password authentication failed" in line and "wrong-password" not in line
    port = server.url.rsplit(":", 1)[1]
    line = one_error_line(cli("tracking-server", "--backend-store-uri", postgres,
                              "--artifacts-destination", str(tmp_path / "art"),
                              "--port", port, timeout=60))
    assert line == (f"flockwatch: error: --host 127.0.0.1 --port {port}: cannot listen there "
                    "(Address already in use)")


def test_demo_next_steps_name_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """After `demo --tracking-uri http://...`, the commands it suggests reach that server
    (they said `mlflow ui --backend-store-uri http://...` and a bare `score`)."""
    from flockwatch.serving.commands.demo import next_steps

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url = "http://127.0.0.1:5000"
    browse, score, serve = next_steps(url, Path("site"), Path("t.png"))[1:]
    assert browse.endswith(f"open {url}")
    assert score.endswith(f"score site/attacks.pcap --tracking-uri {url}")
    assert serve.endswith(f"serve --port 8080 --tracking-uri {url}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    assert "--tracking-uri" not in "".join(next_steps(url, Path("site"), Path("t.png")))
    local = next_steps("sqlite:///h/mlflow.db", Path("site"), Path("t.png"))
    assert "ui --backend-store-uri sqlite:///h/mlflow.db" in local[1]
    assert "--tracking-uri" not in "".join(local)


@pytest.mark.parametrize(("uri", "shown"), [
    ("postgresql://fw:p%40ss@db:5432/mlflow", "postgresql://fw:***@db:5432/mlflow"),
    ("postgresql://fw@db:5432/mlflow", "postgresql://fw@db:5432/mlflow"),
    ("postgresql://db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ("postgresql+psycopg://fw:x@db/m?sslmode=require&password=y",
     "postgresql+psycopg://fw:***@db/m?sslmode=require&password=***"),
    ("https://user:token@mlflow.lan/", "https://user:***@mlflow.lan/"),
    ("sqlite:////srv/mlflow.db", "sqlite:////srv/mlflow.db"),
])
def test_mask_uri(uri: str, shown: str) -> None:
    from flockwatch.models.store import mask_uri

    assert mask_uri(uri) == shown

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def small_pcap(path: Path, linktype: int = 1,
               a: tuple[str, str] = ("02:00:00:00:00:01", "192.168.0.2"),
               b: tuple[str, str] = ("02:00:00:00:00:02", "192.168.0.3")) -> Path:
    """A three-packet capture of one DNS-like UDP flow from host ``a`` (MAC, IP) to ``b``:
    the tiny valid input of the tests whose subject is an error, not the traffic."""
    from flockwatch.datasets.pcap import PcapWriter, ethernet, ipv4, udp

    w = PcapWriter(linktype=linktype)
    for i in range(3):
        w.add(1_700_000_000 + i, ethernet(a[0], b[0], ipv4(a[1], b[1], 17, udp(
            a[1], b[1], 5000, 53, b"x" * 20))))
    path.parent.mkdir(parents=True, exist_ok=True)
    w.write(path)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for servers the tests start)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def data_dir() -> Path:
    return Path(os.environ.get("FLOCKWATCH_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared captures not found at {d} (set FLOCKWATCH_DATA)")
    return d


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                  ) -> Path:
    """Every test gets its own FLOCKWATCH_HOME and a real SQLite MLflow store in a temp dir."""
    home = tmp_path_factory.mktemp("fwhome")
    monkeypatch.setenv("FLOCKWATCH_HOME", str(home))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if "mlflow" in sys.modules:  # a URI set by an earlier test would outlive its store
        sys.modules["mlflow"].set_tracking_uri(uri)
        sys.modules["mlflow"].set_registry_uri(uri)
    return home


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic site: 2 h learning, 2 h with every attack (seeded)."""
    from flockwatch.datasets.synth import synthesize

    out = tmp_path_factory.mktemp("site")
    synthesize(out, hours=2.0, learning_hours=2.0, seed=11)
    return out

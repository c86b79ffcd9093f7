"""Where models live: the embedded MLflow store, model URIs, loading with a local cache."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

DEFAULT_MODEL_NAME = "flockwatch"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"


class ModelLoadError(ValueError):
    """A model URI that does not exist or is not a flockwatch model (one-line message)."""


def flockwatch_home() -> Path:
    return Path(os.environ.get("FLOCKWATCH_HOME") or Path.home() / ".flockwatch").expanduser()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store under ``FLOCKWATCH_HOME``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    home = flockwatch_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (or the default) for tracking and the registry."""
    import logging

    import mlflow

    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """The experiment's id; created with artifacts under FLOCKWATCH_HOME for local stores
    (never in the working directory)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        location = (flockwatch_home() / "artifacts" / re.sub(r"[^\w.-]", "_", name)).as_uri()
    return str(mlflow.create_experiment(name, artifact_location=location))


def _cache_dir(uri: str) -> Path:
    return flockwatch_home() / "model-cache" / re.sub(r"[^\w.@-]", "_", uri)


def check_local_model(uri: str | None) -> bool:
    """True when ``uri`` is a local path (not a registry or run URI); raises
    ``ModelLoadError`` at once when no MLflow model is there. Cheap: no MLflow import."""
    if uri is None or "://" in uri or uri.startswith(("models:", "runs:")):
        return False
    if not (Path(uri) / "MLmodel").exists():
        raise ModelLoadError(f"{uri}: no MLflow model here (no MLmodel file)")
    return True


def load_model(uri: str | None = None, *, use_cache: bool = True) -> object:
    """Load a flockwatch pyfunc model from the registry, a run, or an explicit local path.

    A copy of registry models is kept under FLOCKWATCH_HOME/model-cache, and used when the
    registry cannot be reached (a sensor keeps working from its last model).
    """
    import mlflow

    uri = uri or DEFAULT_MODEL_URI
    if check_local_model(uri):
        return _check(uri, _load(uri, uri))
    cache = _cache_dir(uri)
    try:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as exc:  # registry down, or the model does not exist
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if use_cache and (cache / "MLmodel").exists():
            import logging

            logging.getLogger("flockwatch").warning(
                "model registry unavailable (%s); using cached copy %s", msg, cache)
            return _check(uri, _load(uri, str(cache)))
        if uri == DEFAULT_MODEL_URI:
            raise ModelLoadError(
                f"{uri}: no model registered yet. Train one: `flockwatch demo`, or `flockwatch "
                "train baseline CAPTURES --register flockwatch --promote`") from None
        raise ModelLoadError(f"{uri}: cannot load model: {msg}") from None
    model = _check(uri, _load(uri, path))
    if use_cache:
        try:
            if cache.exists():
                shutil.rmtree(cache)
            shutil.copytree(path, cache)
        except OSError:
            pass
    return model


def _load(uri: str, path: str) -> object:
    import mlflow

    try:
        return mlflow.pyfunc.load_model(path)
    except ValueError as exc:  # e.g. a model of an older feature set
        raise ModelLoadError(f"{uri}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise ModelLoadError(f"{uri}: cannot load model: {str(exc).splitlines()[0]}") from None


def _check(uri: str, model: object) -> object:
    from flockwatch.models.pyfunc import FlockwatchModel

    try:
        inner = model.unwrap_python_model()  # type: ignore[attr-defined]
    except Exception:
        inner = None
    if not isinstance(inner, FlockwatchModel):
        raise ModelLoadError(f"{uri}: not a flockwatch model")
    return model

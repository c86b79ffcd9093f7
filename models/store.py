"""Where models live: the embedded MLflow store, model URIs, loading with a local cache."""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flockwatch.features.home import flockwatch_home

T = TypeVar("T")

DEFAULT_MODEL_NAME = "flockwatch"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"


class ModelLoadError(ValueError):
    """A model URI that does not exist or is not a flockwatch model (one-line message)."""


class TrackingUnreachable(ModelLoadError):
    """An MLflow tracking server that does not answer (one-line message naming its URI)."""


#: How long a client waits for a tracking server's ``/health`` before calling it unreachable.
PROBE_TIMEOUT_S = 5.0
#: MLflow's HTTP client retries a failed request 7 times with a backoff factor of 2 (minutes,
#: sized for rate-limited hosted services); a self-hosted server that is down should be said
#: so in seconds. Used only where the environment does not set them.
HTTP_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}

_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^/:@]*:)[^/]*@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")


def mask_uri(uri: str) -> str:
    """``uri`` with its password (``user:PASSWORD@`` or ``?password=``) shown as ``***``:
    error lines and logs name a store without giving its secret away."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", uri))


def is_http(uri: str | None) -> bool:
    return bool(uri) and str(uri).lower().startswith(("http://", "https://"))


def _unreachable_reason(exc: BaseException, timeout: float) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    text = str(exc)
    for needle, reason in (("Connection refused", "connection refused"),
                           ("NameResolution", "host name not found"),
                           ("Name or service not known", "host name not found"),
                           ("No route to host", "no route to host"),
                           ("Network is unreachable", "network unreachable"),
                           ("SSLError", "TLS handshake failed"),
                           ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
        if needle in text or needle in type(exc).__name__:
            return reason
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return first[:200]


def check_tracking_server(uri: str | None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ``TrackingUnreachable`` when ``uri`` is an MLflow server's address and its
    ``/health`` does not answer within ``timeout``; nothing for local stores. One short
    request instead of MLflow's retry loop: a server that is down is said so at once, and a
    sensor falls back to its cached model without waiting."""
    if uri is None or not is_http(uri):
        return
    import requests

    cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true")
    try:
        answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout,
                              verify=False if insecure else (cert or True))
    except requests.RequestException as exc:
        raise TrackingUnreachable(f"{mask_uri(uri)}: MLflow tracking server unreachable "
                                  f"({_unreachable_reason(exc, timeout)})") from None
    if answer.status_code >= 500:
        raise TrackingUnreachable(f"{mask_uri(uri)}: MLflow tracking server unavailable "
                                  f"(/health answered HTTP {answer.status_code})")


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
    if is_http(uri):
        for name, value in HTTP_CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
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
    registry cannot be reached (a sensor keeps working from its last model). A tracking server
    that is down is found by one short probe, so that fallback takes seconds, not MLflow's
    minutes of retries.
    """
    import mlflow

    uri = uri or DEFAULT_MODEL_URI
    if check_local_model(uri):
        return _check(uri, _load(uri, uri))
    cache = _cache_dir(uri)
    try:
        check_tracking_server(mlflow.get_registry_uri() if uri.startswith("models:")
                              else mlflow.get_tracking_uri())
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as exc:  # registry down, or the model does not exist
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if use_cache and (cache / "MLmodel").exists():
            import logging

            logging.getLogger("flockwatch").warning(
                "model registry unavailable (%s); using cached copy %s", msg, cache)
            return _check(uri, _load(uri, str(cache)))
        if isinstance(exc, TrackingUnreachable):
            raise ModelLoadError(f"{msg}; no cached copy of {uri} to fall back on") from None
        hint = _registry_hint(uri)
        if hint:
            raise ModelLoadError(hint) from None
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


def resolve_version(uri: str) -> str | None:
    """The registry version a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI names
    (None for folders and runs, or when the registry cannot say)."""
    try:
        name, version, alias = parse_registry_uri(uri)
    except ModelLoadError:
        return None
    if alias is None:
        return version
    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except Exception:  # registry down: the caller keeps the model it has
        return None


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


# -- the registry: list, promote, describe ------------------------------------------------------
#: Model version tags written at registration (``training.tracking.register``).
KIND_TAG = "flockwatch.kind"
FEATURE_SET_TAG = "flockwatch.feature_set_version"

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))/?$")


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` -> (name, version, alias)."""
    m = _REGISTRY_URI.match(uri.strip())
    if not m:
        raise ModelLoadError(f"{uri}: not a registered model version; give models:/NAME/VERSION "
                             "or models:/NAME@ALIAS")
    return m["name"], m["version"], m["alias"]


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def _versions(client: Any, name: str) -> list[tuple[Any, list[str]]]:
    """Every version of ``name`` with its aliases, oldest first (a version found by search
    does not always carry its aliases: the registered model does)."""
    aliases: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    found = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    return [(v, sorted(aliases.get(str(v.version), []))) for v in found]


def _registry_hint(uri: str) -> str | None:
    """A one-line error for a registry URI naming a missing model, version or alias: what
    exists, and how to promote a version; None when the registry cannot say."""
    try:
        name, version, alias = parse_registry_uri(uri)
    except ModelLoadError:
        return None
    try:
        client = _client()
        names = sorted(m.name for m in client.search_registered_models())
        if name not in names:
            if uri == DEFAULT_MODEL_URI:
                return None  # the first-run message says how to train one
            return (f"{uri}: no registered model {name!r} (registered: "
                    f"{', '.join(names) or 'none'}; `flockwatch models list` shows them)")
        versions = _versions(client, name)
    except Exception:
        return None
    listed = ", ".join(
        str(v.version) + (f" ({', '.join('@' + a for a in al)})" if al else "")
        for v, al in versions) or "none"
    if alias is not None:
        latest = str(versions[-1][0].version) if versions else "VERSION"
        return (f"{uri}: model {name!r} has no version with alias {alias!r} (versions: "
                f"{listed}); promote one: flockwatch models promote models:/{name}/{latest} "
                f"--alias {alias}")
    if version is not None and version not in {str(v.version) for v, _ in versions}:
        return f"{uri}: model {name!r} has no version {version} (versions: {listed})"
    return None


def _iso(ms: int | None) -> str | None:
    import datetime as dt

    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _version_row(client: Any, v: Any, aliases: list[str], runs: dict[str, Any]
                 ) -> dict[str, Any]:
    """One version as a row: tags written at registration, else the run's parameters (models
    registered before the tags existed)."""
    tags = dict(v.tags or {})
    kind, fs = tags.get(KIND_TAG), tags.get(FEATURE_SET_TAG)
    if (kind is None or fs is None) and v.run_id:
        if v.run_id not in runs:
            try:
                runs[v.run_id] = client.get_run(v.run_id)
            except Exception:
                runs[v.run_id] = None
        run = runs[v.run_id]
        params = run.data.params if run is not None else {}
        kind = kind or ("classifier" if "label_column" in params
                        else "baseline" if "learning_period_s" in params else None)
        fs = fs or params.get("feature_set_version")
    return {"name": v.name, "version": int(v.version), "aliases": aliases,
            "created": _iso(v.creation_timestamp), "kind": kind,
            "feature_set_version": int(fs) if fs is not None and str(fs).isdigit() else None,
            "run_id": v.run_id, "uri": f"models:/{v.name}/{v.version}"}


def _registry_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """A registry that is down or refuses a call ends in one ``ModelLoadError`` line naming
    the tracking store, never in MLflow's or requests' traceback."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        import mlflow

        try:
            check_tracking_server(mlflow.get_registry_uri())
            return fn(*args, **kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the registry client
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelLoadError(f"{mask_uri(mlflow.get_registry_uri())}: the model registry "
                                 f"failed: {first}") from None

    return wrapped


@_registry_errors
def list_models(name: str | None = None) -> list[dict[str, Any]]:
    """Every registered version (of ``name``, or of every model): name, version, aliases,
    created (UTC), kind (classifier/baseline), feature set version, run id."""
    client = _client()
    names = [name] if name else sorted(m.name for m in client.search_registered_models())
    if name:
        try:
            client.get_registered_model(name)
        except Exception:
            raise ModelLoadError(f"models:/{name}: no registered model {name!r}") from None
    runs: dict[str, Any] = {}
    return [_version_row(client, v, al, runs) for n in names for v, al in _versions(client, n)]


def _resolve(client: Any, uri: str) -> Any:
    """The registered version ``uri`` names (one-line ``ModelLoadError`` otherwise)."""
    name, version, alias = parse_registry_uri(uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, str(version))
    except Exception as exc:
        hint = _registry_hint(uri)
        if hint is None and getattr(exc, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            raise  # the registry itself failed: _registry_errors says so
        raise ModelLoadError(hint or f"{uri}: no such model version") from None


@_registry_errors
def promote(uri: str, alias: str = "champion") -> dict[str, Any]:
    """Point ``alias`` at the version ``uri`` names, without retraining. Returns the name,
    version, alias and the version the alias named before (None if it named none)."""
    if not re.fullmatch(r"[A-Za-z_][\w-]*", alias) or alias.lower() == "latest":
        raise ModelLoadError(f"--alias {alias!r}: give a name of letters, digits, '_' or '-' "
                             "(not 'latest')")
    client = _client()
    v = _resolve(client, uri)
    try:
        before: str | None = client.get_model_version_by_alias(v.name, alias).version
    except Exception:
        before = None
    client.set_registered_model_alias(v.name, alias, str(v.version))
    return {"name": v.name, "version": int(v.version), "alias": alias,
            "previous": int(before) if before is not None else None,
            "uri": f"models:/{v.name}@{alias}"}


def _bundle_info(client: Any, v: Any) -> dict[str, Any]:
    """The bundle's ``info`` and creation time, read from the registered artifact without the
    feature-set check that loading for scoring makes (an outdated model can be described)."""
    import pickle
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{v.name}/{v.version}", dst_path=tmp)
        with open(Path(path) / "artifacts" / "bundle.pkl", "rb") as fh:
            bundle = pickle.load(fh)  # noqa: S301 - from the configured registry only
    return {"info": dict(getattr(bundle, "info", {}) or {}),
            "bundle_created": getattr(bundle, "created", None)}


@_registry_errors
def describe(uri: str) -> dict[str, Any]:
    """What one registered version is: its row in ``list_models``, the run's parameters and
    metrics, how many captures trained it and, for baselines, its learning period."""
    client = _client()
    v = _resolve(client, uri)
    aliases = {str(x.version): al for x, al in _versions(client, v.name)}
    row = _version_row(client, v, aliases.get(str(v.version), []), {})
    try:
        run = client.get_run(v.run_id) if v.run_id else None
    except Exception:
        run = None
    params = dict(run.data.params) if run is not None else {}
    metrics = dict(run.data.metrics) if run is not None else {}
    try:
        bundle = _bundle_info(client, v)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"{uri}: cannot read the model: {msg}") from None
    info = bundle["info"]
    caps = info.get("training_captures")
    fs = info.get("feature_set_version")
    row.update({
        "kind": row["kind"] or info.get("kind"),
        "feature_set_version": row["feature_set_version"] or fs,
        "training_captures": None if caps is None else len(caps),
        "learning": {k: x for k, x in info.items() if k.startswith("learning")}
        or ({"learning_period_s": params["learning_period_s"]}
            if "learning_period_s" in params else None),
        "params": params, "metrics": metrics,
        "info": {k: x for k, x in info.items() if k != "training_captures"},
    })
    return row

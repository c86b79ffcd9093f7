"""MLflow logging shared by the trainers: runs, figures, registration, promotion."""

from __future__ import annotations

from typing import Any

from flockwatch.features.windows import parse_duration
from flockwatch.models.bundle import Bundle
from flockwatch.models.pyfunc import log_model
from flockwatch.models.store import (
    FEATURE_SET_TAG,
    KIND_TAG,
    check_tracking_server,
    configure,
    ensure_experiment,
)
from flockwatch.training.result import Registered

__all__ = ["parse_duration", "register", "start_run", "log_figure"]


def start_run(experiment: str, tracking_uri: str | None, run_name: str) -> Any:
    import mlflow

    check_tracking_server(configure(tracking_uri))
    exp_id = ensure_experiment(experiment)
    return mlflow.start_run(experiment_id=exp_id, run_name=run_name)


def log_figure(fig: Any, name: str) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, name)
    plt.close(fig)


def register(bundle: Bundle, name: str | None, promote: bool) -> Registered:
    """Log the model to the active run; register under ``name``; set ``champion`` if asked."""
    import mlflow

    info = log_model(bundle, registered_model_name=name)
    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    if not name:
        return Registered(run_id, info.model_uri)
    version = str(info.registered_model_version)
    # What `flockwatch models list` shows without downloading each model.
    client = mlflow.MlflowClient()
    for key, value in ((KIND_TAG, bundle.info.get("kind")),
                       (FEATURE_SET_TAG, bundle.info.get("feature_set_version"))):
        if value is not None:
            client.set_model_version_tag(name, version, key, str(value))
    champion = None
    if promote:
        client.set_registered_model_alias(name, "champion", version)
        champion = f"models:/{name}@champion"
    return Registered(run_id, f"models:/{name}/{version}", version, champion)

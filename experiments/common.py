"""What every experiment script shares: where the data is, and how results are reported
(printed as JSON, optionally written to a file, and logged as an MLflow run)."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def default_data() -> str:
    return os.environ.get("FLOCKWATCH_DATA", str(REPO.parent / "shared" / "data"))


def arg_parser(doc: str | None, *, data: bool = True) -> argparse.ArgumentParser:
    """The options every experiment takes: ``--data`` (the shared captures) and ``--output``
    (write the results as JSON there); described by the script's first docstring line."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    if data:
        ap.add_argument("--data", default=default_data(),
                        help="folder of the shared captures (FLOCKWATCH_DATA)")
    ap.add_argument("--output", help="write the results as JSON here")
    return ap


def report(name: str, results: dict[str, Any], output: str | None, *,
           params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
           figures: dict[str, Any] | None = None) -> None:
    """Print ``results``, write them to ``output``, log them to MLflow (experiment
    "experiments", default tracking store unless MLFLOW_TRACKING_URI says otherwise)."""
    import mlflow

    from flockwatch.models.store import configure, ensure_experiment

    configure()
    with mlflow.start_run(experiment_id=ensure_experiment("experiments"), run_name=name):
        if params:
            mlflow.log_params(params)
        for k, v in (metrics or {}).items():
            if isinstance(v, (int, float)) and not math.isnan(v):
                mlflow.log_metric(k, float(v))
        mlflow.log_dict(results, "results.json")
        for fname, fig in (figures or {}).items():
            mlflow.log_figure(fig, fname)
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if output:
        Path(output).write_text(text)

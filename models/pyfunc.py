"""The one model everything serves: an MLflow ``PythonModel`` around a ``Bundle``
(``models.bundle``) that runs the scoring pipeline (``models.scoring``), its signature, and
saving or logging it.

Input: flow records with ``FLOW_SCHEMA`` columns (a DataFrame, or JSON records over REST).
Output: one row per device window, ``OUTPUT_COLUMNS``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from flockwatch.features.schema import FLOW_SCHEMA
from flockwatch.models.bundle import Bundle, load_bundle, save_bundle
from flockwatch.models.scoring import (
    OUTPUT_COLUMNS,
    REQUIRED_FLOW_COLUMNS,
    coerce_flows,
    score_flows,
    to_records_frame,
)


class FlockwatchModel(PythonModel):
    """The MLflow pyfunc wrapper around a ``Bundle``."""

    def load_context(self, context):  # type: ignore[no-untyped-def]
        self.bundle = load_bundle(context.artifacts["bundle"])

    # A pandas DataFrame hint: MLflow infers no schema from it (the signature is explicit).
    def predict(self, context, model_input: pd.DataFrame, params=None):  # type: ignore[no-untyped-def]
        flows = coerce_flows(model_input)
        return to_records_frame(score_flows(self.bundle, flows))


def signature() -> Any:
    """The model signature: FLOW_SCHEMA in, OUTPUT_COLUMNS out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    def kind(dtype: pl.DataType) -> Any:
        if isinstance(dtype, pl.Datetime):
            # datetimes (aware or naive), ISO-8601 strings or epoch milliseconds: predict
            # normalises them to UTC, so MLflow must not coerce (its datetime is naive only).
            return AnyType()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
        if dtype in (pl.Int8, pl.Int16, pl.Int32):
            return "integer"
        if dtype == pl.Int64:
            return "long"
        if dtype == pl.Float64:
            return "double"
        return "string"

    def spec(name: str, dtype: pl.DataType) -> Any:
        # the industrial counts are null for every non-industrial flow: pandas carries such
        # a column as float64 with NaN, which MLflow refuses to call long; predict casts back
        if name.startswith("ot_") and dtype == pl.Int64:
            return AnyType()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
        return kind(dtype)

    inputs = Schema([ColSpec(spec(n, t), n, required=n in REQUIRED_FLOW_COLUMNS)
                     for n, t in FLOW_SCHEMA.items()])
    out_types = {"type_confidence": "double", "anomaly_score": "double", "threshold": "double",
                 "category_confidence": "double", "vendor_confidence": "double",
                 "unknown": "boolean", "new_device": "boolean", "anomalous": "boolean",
                 "learning": "boolean"}
    outputs = Schema([ColSpec(out_types.get(c, "string"), c) for c in OUTPUT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    reqs = []
    for pkg in ("flockwatch", "torch", "lightgbm", "polars", "nfstream", "mlflow", "numpy",
                "pandas"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except Exception:
            continue
    return reqs


def save_model(bundle: Bundle, path: str | Path) -> Path:
    """Write the bundle as an MLflow pyfunc model folder at ``path``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        art = Path(tmp) / "bundle.pkl"
        save_bundle(bundle, art)
        mlflow.pyfunc.save_model(str(path), python_model=FlockwatchModel(),
                                 artifacts={"bundle": str(art)}, signature=signature(),
                                 pip_requirements=_pip_requirements())
    return Path(path)


def log_model(bundle: Bundle, *, registered_model_name: str | None = None) -> Any:
    """Log the bundle to the active MLflow run (and register it when a name is given)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        art = Path(tmp) / "bundle.pkl"
        save_bundle(bundle, art)
        return mlflow.pyfunc.log_model(
            name="model", python_model=FlockwatchModel(), artifacts={"bundle": str(art)},
            signature=signature(), pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name,
        )

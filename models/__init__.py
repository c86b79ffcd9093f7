"""Estimators: the device classifier, the behavioural baseline, thresholds, the pyfunc model.

``flockwatch.models.bundle`` (what a model holds), ``flockwatch.models.scoring`` (the
pipeline) and ``flockwatch.models.pyfunc`` (the MLflow wrapper, which imports MLflow) are
imported on demand.
"""

from flockwatch.models.base import NotFittedError
from flockwatch.models.baseline import BaselineAutoencoder
from flockwatch.models.classifier import UNKNOWN, DeviceClassifier
from flockwatch.models.thresholds import QuantileThreshold

__all__ = [
    "UNKNOWN",
    "BaselineAutoencoder",
    "DeviceClassifier",
    "NotFittedError",
    "QuantileThreshold",
]

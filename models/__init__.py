"""Estimators: the device classifier, the behavioural baseline, thresholds, the pyfunc model.

``flockwatch.models.pyfunc`` (which imports MLflow) is imported on demand.
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

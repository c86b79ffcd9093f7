"""Traffic sources -> flow tables -> device attribution -> per-device windows -> inventory."""

from flockwatch.features.attribution import attribute
from flockwatch.features.errors import InputError
from flockwatch.features.flows import ExtractResult, Problem, extract, read_capture
from flockwatch.features.inventory import INVENTORY_COLUMNS, inventory
from flockwatch.features.live import RawCapture, capture_interface
from flockwatch.features.schema import FLOW_SCHEMA, conform
from flockwatch.features.windows import (
    FEATURE_COLUMNS,
    KEY_COLUMNS,
    WindowSpec,
    assign_windows,
    window_features,
    windows,
)
from flockwatch.features.zeek import read_zeek_conn

__all__ = [
    "FEATURE_COLUMNS",
    "FLOW_SCHEMA",
    "INVENTORY_COLUMNS",
    "KEY_COLUMNS",
    "ExtractResult",
    "InputError",
    "Problem",
    "RawCapture",
    "WindowSpec",
    "assign_windows",
    "attribute",
    "capture_interface",
    "conform",
    "extract",
    "inventory",
    "read_capture",
    "read_zeek_conn",
    "window_features",
    "windows",
]

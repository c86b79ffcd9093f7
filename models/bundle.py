"""What a flockwatch model holds (``Bundle``), its pickle, and the feature-set check: a
model is only as good as the features it was trained on, so one computed by another feature
set version is refused at load, not scored wrongly.

Pickles name classes by module path: a bundle is ``flockwatch.models.bundle.Bundle``.
"""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flockwatch.features.windows import FEATURE_SET_VERSION, WindowSpec


@dataclass
class Bundle:
    """What a flockwatch model holds."""

    window: WindowSpec
    classifier: Any | None = None
    #: windows the classifier was trained on, when they differ from the baseline's
    classifier_window: WindowSpec | None = None
    baseline: Any | None = None
    #: ``PeerBaseline`` of local (device, peer, port) pairs seen while learning
    peers: Any | None = None
    #: per device, the host-name words and fingerprints it showed while learning
    #: (``features.explain.vocabulary``): alerts mark the ones never seen
    vocabulary: dict[str, frozenset[str]] | None = None
    #: per device, the hosts that sent it industrial requests while learning
    #: (``features.findings.learn_masters``): a write from any other is a finding
    masters: dict[str, frozenset[str]] | None = None
    label_column: str = "device_type"
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.info.setdefault("feature_set_version", FEATURE_SET_VERSION)

    @property
    def learning(self) -> dict[str, Any] | None:
        """What the baseline learnt from (``info["learning"]``): ``start`` and ``end`` (ISO
        times; flows starting from ``start`` and before ``end`` were learnt), ``period_s``
        (the ``--learning-period`` asked for, null for the whole input) and ``captures``
        (``sha256``, ``name``, ``bytes`` of each capture learnt from). None for models without
        a baseline or trained before flockwatch recorded it: they have no learning windows."""
        rec = self.info.get("learning")
        return rec if isinstance(rec, dict) and rec.get("end") else None

    def learning_end(self) -> dt.datetime | None:
        rec = self.learning
        if rec is None:
            return None
        return dt.datetime.fromisoformat(str(rec["end"]).replace("Z", "+00:00"))


def save_bundle(bundle: Bundle, path: str | Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(bundle, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_bundle(path: str | Path) -> Bundle:
    with open(path, "rb") as fh:
        bundle = pickle.load(fh)  # noqa: S301 - only from the configured registry or a path
    if not isinstance(bundle, Bundle):
        raise TypeError(f"{path}: not a flockwatch bundle")
    check_feature_set(bundle)
    return bundle


def check_feature_set(bundle: Bundle) -> None:
    """Raise ``ValueError`` unless the bundle was trained on this flockwatch's feature set."""
    version = bundle.info.get("feature_set_version", 1)
    if version != FEATURE_SET_VERSION:
        raise ValueError(f"model was trained on feature set v{version}; this flockwatch computes "
                         f"v{FEATURE_SET_VERSION}: retrain it")


def bundle_of(model: Any) -> Bundle:
    """The ``Bundle`` inside a loaded flockwatch pyfunc model (``store.load_model``)."""
    bundle: Bundle = model.unwrap_python_model().bundle
    return bundle

"""The autoencoder's forward pass on numpy. Training needs torch; scoring does not: the
fitted network is kept as numpy layers, so loading and scoring a model never imports torch
(about a second), and for these small layers numpy is no slower than torch on a CPU."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The trained network as numpy: ("linear", W (in x out), b) or ("gelu", None, None) per
#: layer.
Layers = list[tuple[str, Any, Any]]


def to_layers(net: Any) -> Layers:
    """A trained ``torch.nn.Sequential`` of Linear and GELU layers as ``Layers``."""
    import torch

    layers: Layers = []
    for m in net:
        if isinstance(m, torch.nn.Linear):
            layers.append(("linear", m.weight.detach().cpu().numpy().T.copy(),
                           m.bias.detach().cpu().numpy().copy()))
        elif isinstance(m, torch.nn.GELU):
            layers.append(("gelu", None, None))
        else:
            raise TypeError(f"unsupported layer {type(m).__name__}")
    return layers


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26; absolute error below 1.5e-7, under float32
    resolution) so that scoring needs neither torch nor scipy."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return np.asarray(sign * (1.0 - poly * np.exp(-a * a)))


def forward(layers: Layers, Z: np.ndarray) -> np.ndarray:
    """The network's output for rows ``Z``, in float32 as torch computes it."""
    h = np.asarray(Z, dtype=np.float32)
    for kind, w, b in layers:
        if kind == "linear":
            h = h @ w + b
        else:  # exact GELU, as torch.nn.GELU()
            h = (0.5 * h * (1.0 + _erf(h * np.float32(0.7071067811865476)))).astype(np.float32)
    return h

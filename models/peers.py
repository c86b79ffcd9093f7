"""New local peers: which devices talked to which local hosts, on which service port, during
learning. A PLC written to by a host that never spoke Modbus to it, or a camera opening SSH to a
workstation, is a new peer: explainable on its own, whatever the window's anomaly score.

Learning remembers every conversation; a new peer is reported only where a conversation is
opened (``features.attribution.initiation``: a TCP SYN, a UDP request to a service port), never
for a reply or the later part of a long TCP stream."""

from __future__ import annotations

import polars as pl

from flockwatch.features.attribution import initiation, tcp_probe
from flockwatch.models.base import check_fitted

_KEY = ["device_id", "peer_ip", "port"]


class PeerBaseline:
    """The set of (device, local peer, service port) seen while learning.

    Remote peers are left out on purpose: cloud services rotate addresses daily.
    """

    def __init__(self) -> None:
        self.known_: pl.DataFrame | None = None

    @staticmethod
    def _pairs(attributed: pl.DataFrame) -> pl.LazyFrame:
        # Scan probes are no conversation: the anomaly score, not the peer list, speaks for them.
        return attributed.lazy().filter(
            pl.col("peer_local") & pl.col("peer_ip").is_not_null() & ~tcp_probe()
        ).with_columns(pl.col("dst_port").fill_null(0).alias("port"))

    def fit(self, attributed: pl.DataFrame) -> PeerBaseline:
        """Learn from attributed flows (``features.attribute``) of the learning period."""
        self.known_ = self._pairs(attributed).select(_KEY).unique().collect()
        self.devices_ = set(attributed["device_id"].unique().to_list())
        return self

    def new_peers(self, attributed: pl.DataFrame) -> pl.DataFrame:
        """Per window (attributed flows with window columns): the new ``peer:port`` pairs of
        devices known from learning."""
        check_fitted(self, "known_")
        assert self.known_ is not None
        new = (
            self._pairs(attributed)
            .filter(pl.col("device_id").is_in(list(self.devices_)) & initiation())
            .join(self.known_.lazy(), on=_KEY, how="anti")
            .group_by("source", "device_id", "start", "end")
            .agg((pl.col("peer_ip") + ":" + pl.col("port").cast(pl.String)).unique().sort()
                 .alias("new_peers"),
                 pl.col("port").unique().sort().alias("ports"))
        )
        return new.collect()

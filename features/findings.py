"""Risk findings: facts a device's traffic shows, as documented rules (docs/findings.md).

Unlike an alert, a finding is no deviation from a baseline: a secret sent in clear text or a
Telnet server answering the internet is a risk the first time it is seen. The rules read the
attributed flows (``features.attribution``) and the flow columns of the payload pass
(``payload``) and of the industrial dissectors (``ot_requests``, ``ot_writes``,
``ot_program``); a flow table without those columns (an older cache, a Zeek log) gives the
rules that need them nothing to read, never an error.

Work is split so that an input scored part by part (``serving.score.score_parts``) gives the
findings of the whole: ``evidence`` keeps, per part, the flows that are evidence of a rule, and
``industrial_requests`` the industrial requests per (device, host, protocol); ``summarise``
then groups them into one finding per device and rule. Industrial writes need the device's
masters, which only the whole input (or a baseline) can tell.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

from flockwatch.features.attribution import master_application
from flockwatch.features.industrial import INDUSTRIAL_PORTS, INDUSTRIAL_PROTOCOLS
from flockwatch.features.orient import initiator_syn

#: IPv4 multicast and the limited broadcast: never a remote host (a public address ending
#: in .255 may be one, unlike a private directed broadcast, which is local anyway).
V4_GROUP = r"^(22[4-9]|23\d)\.|^255\.255\.255\.255$"
#: The rules, in the order findings are listed (``docs/findings.md`` documents each).
KINDS = ("cleartext_credentials", "obsolete_tls", "bad_certificate", "remote_access_exposed",
         "industrial_write", "industrial_remote")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}
#: Evidence flows a finding names at most (the rest are counted in its message).
MAX_FLOWS = 10

#: Remote-access services by TCP port (nDPI's name of the same service counts on any port).
REMOTE_ACCESS_PORTS: dict[int, str] = {
    23: "Telnet", 2323: "Telnet", 22: "SSH", 3389: "RDP", 5900: "VNC", 5901: "VNC",
    80: "HTTP", 8080: "HTTP", 443: "HTTPS", 8443: "HTTPS"}
REMOTE_ACCESS_APPS = {"Telnet": "Telnet", "SSH": "SSH", "RDP": "RDP", "VNC": "VNC"}
#: A service that hands out a shell or a desktop is high; SSH and a web admin page medium.
REMOTE_ACCESS_SEVERITY = {"Telnet": "high", "RDP": "high", "VNC": "high", "SSH": "medium",
                          "HTTP": "medium", "HTTPS": "medium"}

#: ``cleartext_login`` ways: a login's password is high, an SNMP community medium.
CLEARTEXT_SEVERITY = {"snmp_v1": "medium", "snmp_v2c": "medium"}
OBSOLETE_TLS = {"SSLv2": "high", "SSLv3": "high", "TLS1.0": "medium", "TLS1.1": "medium"}

#: The optional flow columns the rules read, with their dtypes (null where absent).
_OPTIONAL = {"payload": pl.String(), "ot_protocol": pl.String(), "ot_requests": pl.Int64(),
             "ot_writes": pl.Int64(), "ot_program": pl.Int64()}
#: ``ot_protocol`` values in ``features.industrial``'s (nDPI's) spelling.
OT_NAMES = {"modbus": "Modbus", "dnp3": "DNP3", "s7comm": "S7Comm", "enip": "EthernetIP",
            "iec104": "IEC60870"}

#: ``evidence`` columns.
EVIDENCE_SCHEMA = pl.Schema({
    "kind": pl.String(), "severity": pl.String(), "device_id": pl.String(),
    "mac": pl.String(), "ip": pl.String(), "first_seen": pl.Datetime("ms", "UTC"),
    "last_seen": pl.Datetime("ms", "UTC"), "flow": pl.String(), "peer": pl.String(),
    "detail": pl.String(), "role": pl.String(), "count": pl.Int64()})
#: ``industrial_requests`` columns.
REQUEST_SCHEMA = pl.Schema({"device_id": pl.String(), "peer": pl.String(),
                            "protocol": pl.String(), "requests": pl.Int64()})
#: ``summarise`` columns: one finding per row.
FINDING_SCHEMA = pl.Schema({
    "kind": pl.String(), "severity": pl.String(), "device_id": pl.String(),
    "mac": pl.String(), "ip": pl.String(), "first_seen": pl.Datetime("ms", "UTC"),
    "last_seen": pl.Datetime("ms", "UTC"), "flows": pl.List(pl.String()),
    "message": pl.String()})


def _with_optional(att: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in _OPTIONAL.items()
               if c not in att.columns]
    return att.with_columns(missing) if missing else att


def flow_label() -> pl.Expr:
    """A flow as findings name it: ``src:port -> dst:port/proto`` (IPv6 in brackets)."""
    def end(ip: str, port: str) -> pl.Expr:
        addr = pl.when(pl.col(ip).str.contains(":")).then(
            pl.lit("[") + pl.col(ip) + pl.lit("]")).otherwise(pl.col(ip))
        return addr.fill_null("?") + pl.lit(":") + pl.col(port).cast(pl.String).fill_null("0")
    proto = pl.col("protocol").replace_strict({6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6"},
                                              default=None, return_dtype=pl.String)
    return (end("src_ip", "src_port") + pl.lit(" -> ") + end("dst_ip", "dst_port")
            + pl.lit("/") + pl.coalesce(proto, pl.col("protocol").cast(pl.String)))


def answered() -> pl.Expr:
    """A TCP session the server took up: packets both ways, and either its SYN-ACK was seen
    (two SYN-flagged packets, the initiator's and the answer's) or the flow was first seen
    after the initiator's bare SYN (at the SYN-ACK or mid-stream). A refused (SYN, RST) or
    unanswered attempt is not one."""
    both = (pl.col("src2dst_packets") > 0) & (pl.col("dst2src_packets") > 0)
    return (both & ((pl.col("syn_packets") >= 2) | ~initiator_syn())).fill_null(False)


def _device_is_server() -> pl.Expr:
    return pl.col("direction") == "in"


def remote_peer() -> pl.Expr:
    """The peer is a non-local unicast address: attribution's ``peer_local`` is false, and
    the peer is no broadcast or multicast address (an EtherNet/IP ListIdentity broadcast to
    255.255.255.255 reaches the segment, not the internet)."""
    peer = pl.col("peer_ip")
    group = peer.str.contains(V4_GROUP) | peer.str.to_lowercase().str.starts_with("ff")
    return (~pl.col("peer_local") & peer.is_not_null() & ~group).fill_null(False)


def _base(att: pl.DataFrame) -> pl.DataFrame:
    return att.with_columns(flow_label().alias("_flow"))


def _rows(df: pl.DataFrame, kind: str, severity: pl.Expr, detail: pl.Expr, role: pl.Expr,
          count: pl.Expr | None = None) -> pl.DataFrame:
    return df.select(
        pl.lit(kind).alias("kind"), severity.alias("severity"), "device_id", "mac", "ip",
        "first_seen", "last_seen", pl.col("_flow").alias("flow"),
        pl.col("peer_ip").alias("peer"), detail.alias("detail"), role.alias("role"),
        (pl.lit(1, dtype=pl.Int64) if count is None else count).cast(pl.Int64).alias("count"),
    )


def _entries(att: pl.DataFrame) -> pl.DataFrame:
    """The ``payload`` entries of attributed flows, one a row: ``_kind``, ``_value`` and
    ``_mine`` (sent by the credited device's own endpoint)."""
    with_payload = att.filter(pl.col("payload").is_not_null())
    if with_payload.height == 0:
        return with_payload.with_columns(pl.lit(None, pl.String).alias("_kind"),
                                         pl.lit(None, pl.String).alias("_value"),
                                         pl.lit(None, pl.Boolean).alias("_mine"))
    e = with_payload.with_columns(pl.col("payload").str.split("\n").alias("_entry")).explode(
        "_entry").filter(pl.col("_entry").str.contains(r"^[<>][a-z0-9_]+="))
    by_src = pl.col("_entry").str.slice(0, 1) == ">"
    mine = by_src == (pl.col("direction") == "out")
    return e.with_columns(
        pl.col("_entry").str.extract(r"^[<>]([a-z0-9_]+)=", 1).alias("_kind"),
        pl.col("_entry").str.replace(r"^[<>][a-z0-9_]+=", "").alias("_value"),
        mine.alias("_mine"))


def _cleartext(e: pl.DataFrame) -> pl.DataFrame:
    c = e.filter(pl.col("_kind") == "cleartext_login")
    sev = pl.col("_value").replace_strict(CLEARTEXT_SEVERITY, default="high",
                                          return_dtype=pl.String)
    role = pl.when(pl.col("_mine")).then(pl.lit("client")).otherwise(pl.lit("server"))
    return _rows(c, "cleartext_credentials", sev, pl.col("_value"), role)


def _tls(e: pl.DataFrame) -> pl.DataFrame:
    v = e.filter((pl.col("_kind") == "tls_version")
                 & pl.col("_value").is_in(list(OBSOLETE_TLS)))
    role = pl.when(pl.col("_mine")).then(pl.lit("server")).otherwise(pl.lit("client"))
    sev = pl.col("_value").replace_strict(OBSOLETE_TLS, default="medium",
                                          return_dtype=pl.String)
    return _rows(v, "obsolete_tls", sev, pl.col("_value"), role)


def _cert_field(name: str) -> pl.Expr:
    return pl.col("_value").str.extract(rf"(?:^|;){name}=([^;]*)", 1)


def _time(text: pl.Expr) -> pl.Expr:
    return text.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms")


def _certificates(e: pl.DataFrame) -> pl.DataFrame:
    c = e.filter(pl.col("_kind") == "tls_cert").with_columns(
        _time(_cert_field("not_after").str.replace(r"Z$", "")).alias("_not_after"),
        (_cert_field("self_signed") == "1").fill_null(False).alias("_self"),
        _cert_field("subject").alias("_subject"))
    expired = (pl.col("_not_after") < pl.col("first_seen")).fill_null(False)
    c = c.filter(expired | pl.col("_self")).with_columns(expired.alias("_expired"))
    what = pl.concat_str(
        pl.when(pl.col("_expired")).then(
            pl.lit("expired ") + pl.col("_not_after").dt.strftime("%Y-%m-%d")),
        pl.when(pl.col("_self")).then(pl.lit("self-signed")),
        separator=", ", ignore_nulls=True)
    detail = what + pl.lit(" (") + pl.col("_subject").fill_null("no subject") + pl.lit(")")
    sev = pl.when(pl.col("_expired")).then(pl.lit("medium")).otherwise(pl.lit("low"))
    role = pl.when(pl.col("_mine")).then(pl.lit("server")).otherwise(pl.lit("client"))
    return _rows(c, "bad_certificate", sev, detail, role)


def _service() -> pl.Expr:
    """The remote-access service a flow reached: its TCP port's, else nDPI's name of it on a
    port that is no industrial protocol's (a scanner's RDP cookie sent to a PLC's port 502
    names the client's payload, not the service that answered)."""
    app = master_application().replace_strict(REMOTE_ACCESS_APPS, default=None,
                                              return_dtype=pl.String)
    port = pl.col("dst_port").replace_strict(REMOTE_ACCESS_PORTS, default=None,
                                             return_dtype=pl.String)
    other = pl.col("dst_port").is_in(list(INDUSTRIAL_PORTS))
    return pl.coalesce(port, pl.when(~other).then(app))


def _remote_access(att: pl.DataFrame) -> pl.DataFrame:
    r = att.filter((pl.col("protocol") == 6) & _device_is_server() & remote_peer()
                   & answered()).with_columns(_service().alias("_svc")).filter(
        pl.col("_svc").is_not_null())
    sev = pl.col("_svc").replace_strict(REMOTE_ACCESS_SEVERITY, default="medium",
                                        return_dtype=pl.String)
    detail = pl.col("_svc") + pl.lit(" (") + pl.col("dst_port").cast(pl.String) + pl.lit("/tcp)")
    return _rows(r, "remote_access_exposed", sev, detail, pl.lit("server"))


def industrial_protocol() -> pl.Expr:
    """The industrial protocol of a flow, or null: nDPI's name where it is one of
    ``features.industrial``'s, else the one the industrial dissectors read (``ot_protocol``),
    else the protocol of its service port when nDPI named none
    (nDPI guesses a name from the port only for flows it could not read, which
    ``_conversation`` then requires to be a real exchange)."""
    app = master_application()
    by_port = pl.col("dst_port").replace_strict(INDUSTRIAL_PORTS, default=None,
                                                return_dtype=pl.String)
    dissected = pl.col("ot_protocol").replace_strict(OT_NAMES, default=None,
                                                     return_dtype=pl.String)
    return (pl.when(app.is_in(list(INDUSTRIAL_PROTOCOLS))).then(app)
            .when(dissected.is_not_null()).then(dissected)
            .when(app == "Unknown").then(by_port).otherwise(None))


def _conversation() -> pl.Expr:
    """Traffic both ways that is not a refused or unanswered TCP attempt (a scan probe of an
    industrial port is not industrial traffic), or any industrial request parsed."""
    both = (pl.col("src2dst_packets") > 0) & (pl.col("dst2src_packets") > 0)
    tcp_ok = (pl.col("protocol") != 6) | answered()
    return ((both & tcp_ok) | (pl.col("ot_requests").fill_null(0) > 0)).fill_null(False)


def _industrial_remote(att: pl.DataFrame) -> pl.DataFrame:
    r = att.with_columns(industrial_protocol().alias("_proto")).filter(
        pl.col("_proto").is_not_null() & remote_peer() & _conversation())
    # The server is the side on the protocol's port where one side is (a flow that the
    # capture shows from its reply on, and that orientation could not flip, says so).
    ports = list(INDUSTRIAL_PORTS)
    mine = pl.when(_device_is_server()).then(pl.col("dst_port")).otherwise(pl.col("src_port"))
    theirs = pl.when(_device_is_server()).then(pl.col("src_port")).otherwise(pl.col("dst_port"))
    role = (pl.when(mine.is_in(ports) & ~theirs.is_in(ports)).then(pl.lit("server"))
            .when(theirs.is_in(ports) & ~mine.is_in(ports)).then(pl.lit("client"))
            .when(_device_is_server()).then(pl.lit("server")).otherwise(pl.lit("client")))
    return _rows(r, "industrial_remote", pl.lit("high"), pl.col("_proto"), role)


def _industrial_writes(att: pl.DataFrame) -> pl.DataFrame:
    """Flows in which a host asked the device to write or change its program (the master
    check comes later, in ``summarise``)."""
    writes = pl.col("ot_writes").fill_null(0) + pl.col("ot_program").fill_null(0)
    w = att.filter(_device_is_server() & (writes > 0)).with_columns(
        industrial_protocol().alias("_proto"))
    detail = pl.col("_proto").fill_null("industrial") + pl.lit(";") + pl.col(
        "ot_writes").fill_null(0).cast(pl.String) + pl.lit(";") + pl.col(
        "ot_program").fill_null(0).cast(pl.String)
    return _rows(w, "industrial_write", pl.lit("high"), detail, pl.lit("server"), writes)


def evidence(att: pl.DataFrame) -> pl.DataFrame:
    """The attributed flows that are evidence of a rule, one row per (flow, device, rule)
    (``EVIDENCE_SCHEMA``). ``att``: ``features.attribution.attribute`` output."""
    if att.height == 0:
        return pl.DataFrame(schema=EVIDENCE_SCHEMA)
    att = _base(_with_optional(att))
    e = _entries(att)
    parts = [_cleartext(e), _tls(e), _certificates(e), _remote_access(att),
             _industrial_writes(att), _industrial_remote(att)]
    return pl.concat([p.cast(dict(EVIDENCE_SCHEMA)) for p in parts])  # type: ignore[arg-type]


def industrial_requests(att: pl.DataFrame) -> pl.DataFrame:
    """Industrial requests per (device as server, requesting host, protocol): ``ot_requests``
    where the industrial dissectors counted them, else one per industrial conversation (a
    flow nDPI names industrial, answered). ``REQUEST_SCHEMA``; the protocol as
    ``industrial_protocol`` names it (``industrial`` where it cannot)."""
    if att.height == 0:
        return pl.DataFrame(schema=REQUEST_SCHEMA)
    att = _with_optional(att)
    parsed = pl.col("ot_requests").is_not_null()
    n = pl.when(parsed).then(pl.col("ot_requests")).otherwise(
        pl.when(industrial_protocol().is_not_null() & _conversation()).then(1).otherwise(0))
    return (att.filter(_device_is_server() & pl.col("peer_ip").is_not_null())
            .select("device_id", pl.col("peer_ip").alias("peer"),
                    industrial_protocol().fill_null("industrial").alias("protocol"),
                    n.cast(pl.Int64).alias("n"))
            .filter(pl.col("n") > 0)
            .group_by("device_id", "peer", "protocol").agg(pl.col("n").sum().alias("requests"))
            .sort("device_id", "peer", "protocol"))


def merge_requests(parts: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """``industrial_requests`` of a whole input from its parts'."""
    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame(schema=REQUEST_SCHEMA)
    return pl.concat(parts).group_by("device_id", "peer", "protocol").agg(
        pl.col("requests").sum()).sort("device_id", "peer", "protocol")


def learn_masters(att: pl.DataFrame) -> dict[str, frozenset[str]]:
    """Per device, the hosts that sent it industrial requests: its masters, as a baseline
    learns them (``Bundle.masters``) from the attributed flows of its learning period. Every
    device seen is listed, one that no host sent industrial requests with no master: a write
    to it later is from outside its masters, whoever sends it."""
    req = industrial_requests(att)
    grouped = req.group_by("device_id").agg(pl.col("peer").unique())  # any protocol
    out: dict[str, frozenset[str]] = {d: frozenset() for d in att["device_id"].unique()
                                      .drop_nulls().to_list()}
    out.update({d: frozenset(p) for d, p in grouped.iter_rows()})
    return out


def fallback_masters(requests: pl.DataFrame) -> dict[tuple[str, str], str]:
    """Per (device, protocol), the master taken when none were learnt for the device: of the
    hosts that sent it requests of that protocol, the one that sent that protocol's requests
    to most devices of the input (a SCADA master polls many; an attacker's flood of one
    device outnumbers the master's requests to it, as on the shared modbus-scada capture, but
    not its reach), then the one that sent the device most of them, then the lowest address.
    Per protocol, because an engineering station's S7 session with two PLCs makes it no Modbus
    master of either."""
    if requests.height == 0:
        return {}
    reach = requests.group_by("peer", "protocol").agg(
        pl.col("device_id").n_unique().alias("_reach"))
    top = (requests.join(reach, on=["peer", "protocol"])
           .sort(["device_id", "protocol", "_reach", "requests", "peer"],
                 descending=[False, False, True, True, False])
           .group_by("device_id", "protocol", maintain_order=True).first())
    return {(d, p): peer for d, p, peer in top.select("device_id", "protocol", "peer")
            .iter_rows()}


class MasterMemory:
    """The industrial requests a live sensor has seen so far, so that the masters it falls
    back to for devices without learnt ones rest on everything it saw, not on one window."""

    def __init__(self) -> None:
        self.requests = pl.DataFrame(schema=REQUEST_SCHEMA)

    def update(self, requests: pl.DataFrame) -> pl.DataFrame:
        """Add a window's requests; returns all seen so far."""
        self.requests = merge_requests([self.requests, requests])
        return self.requests


def _listed(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


_WAYS = {"ftp": "FTP USER/PASS", "telnet": "Telnet login", "http_basic": "HTTP Basic",
         "pop3": "POP3 login", "imap": "IMAP login", "mqtt": "MQTT CONNECT password",
         "snmp_v1": "SNMPv1 community", "snmp_v2c": "SNMPv2c community"}


def _message(kind: str, rows: list[dict[str, Any]], flows: int, note: str) -> str:
    peers = sorted({r["peer"] for r in rows if r["peer"]})
    details = sorted({r["detail"] for r in rows if r["detail"]})
    roles = {r["role"] for r in rows}
    n = _plural(flows, "flow")
    if kind == "cleartext_credentials":
        ways = _listed([_WAYS.get(d, d) for d in details])
        side = ("sent by this device" if roles == {"client"} else "received by this device"
                if roles == {"server"} else "sent and received by this device")
        return (f"secret seen in clear text ({ways}), {side}, peer(s) {_listed(peers)}, "
                f"{n}; the secret itself is not recorded")
    if kind == "obsolete_tls":
        side = ("as server" if roles == {"server"} else "as client" if roles == {"client"}
                else "as server and client")
        return f"obsolete TLS negotiated ({_listed(details)}) {side} with {_listed(peers)}, {n}"
    if kind == "bad_certificate":
        side = ("presented by this device" if roles == {"server"}
                else "presented to this device by " + _listed(peers) if roles == {"client"}
                else "presented by and to this device")
        return f"bad server certificate {_listed(details, 2)}, {side}, {n}"
    if kind == "remote_access_exposed":
        return (f"remote access answered from non-local addresses: {_listed(details)} "
                f"reached by {_listed(peers)}, {_plural(flows, 'session')}")
    if kind == "industrial_write":
        protos = sorted({d.split(";")[0] for d in details})
        writes = sum(int(r["detail"].split(";")[1]) for r in rows)
        program = sum(int(r["detail"].split(";")[2]) for r in rows)
        what = ", ".join(x for x in (
            _plural(writes, "write") if writes else "",
            _plural(program, "program change") if program else "") if x)
        return (f"{'/'.join(protos)} {what} from {_listed(peers)}, not among this device's "
                f"masters ({note}), {n}")
    outbound = roles == {"client"}
    inbound = roles == {"server"}
    way = "to" if outbound else "from" if inbound else "to and from"
    return f"{_listed(details)} {way} non-local address(es) {_listed(peers)}, {n}"


def summarise(ev: pl.DataFrame, requests: pl.DataFrame | None = None,
              masters: dict[str, frozenset[str]] | None = None, *,
              max_flows: int = MAX_FLOWS) -> pl.DataFrame:
    """One finding per (device, rule) from the ``evidence`` of an input (``FINDING_SCHEMA``),
    most severe first.

    Industrial writes count only from hosts outside the device's masters: ``masters`` learnt
    by a baseline where it knows the device; otherwise (no baseline, or a device it did not
    learn) the one ``fallback_masters`` takes from ``requests`` (``industrial_requests`` of
    the whole input), which the message says."""
    if ev.height == 0:
        return pl.DataFrame(schema=FINDING_SCHEMA)
    fallback = fallback_masters(requests if requests is not None
                                else pl.DataFrame(schema=REQUEST_SCHEMA))
    learnt = masters or {}
    out = []
    ev = ev.sort("first_seen", "flow")
    for (device, kind), g in ev.group_by(["device_id", "kind"], maintain_order=True):
        rows = g.to_dicts()
        note = ""
        if kind == "industrial_write":
            if device in learnt:
                known = learnt[device]
                note = "learnt: " + (_listed(sorted(known)) if known else "none")
                rows = [r for r in rows if r["peer"] not in known]
            else:
                taken: dict[str, str | None] = {}
                for r in rows:
                    proto = r["detail"].split(";")[0]
                    taken[proto] = fallback.get((device, proto))
                rows = [r for r in rows if r["peer"] != taken[r["detail"].split(";")[0]]]
                named = [f"{m} ({p})" if len(taken) > 1 else m
                         for p, m in sorted(taken.items()) if m]
                note = ("none learnt for it; taken as " + ", ".join(named) + ", the host that "
                        "sent requests of that protocol to most devices here, then most to it"
                        if named else "none learnt for it, and no industrial requests to tell "
                        "one")
            if not rows:
                continue
        flows = list(dict.fromkeys(r["flow"] for r in rows))
        severity = max((r["severity"] for r in rows), key=SEVERITY_RANK.__getitem__)
        out.append({
            "kind": kind, "severity": severity, "device_id": device,
            "mac": next((r["mac"] for r in rows if r["mac"]), None),
            "ip": next((r["ip"] for r in rows if r["ip"]), None),
            "first_seen": min(r["first_seen"] for r in rows),
            "last_seen": max(r["last_seen"] for r in rows),
            "flows": flows[:max_flows],
            "message": _message(str(kind), rows, len(flows), note),
        })
    if not out:
        return pl.DataFrame(schema=FINDING_SCHEMA)
    df = pl.DataFrame(out, schema=FINDING_SCHEMA)
    rank = pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int8)
    order = pl.col("kind").replace_strict({k: i for i, k in enumerate(KINDS)},
                                          return_dtype=pl.Int8)
    return df.sort([rank, "device_id", order], descending=[True, False, False])


def findings(flows: pl.DataFrame, attributed: pl.DataFrame | None = None,
             masters: dict[str, frozenset[str]] | None = None) -> pl.DataFrame:
    """The findings of a flow table in one call (``evidence`` then ``summarise``)."""
    from flockwatch.features.attribution import attribute

    att = attribute(flows) if attributed is None else attributed
    return summarise(evidence(att), industrial_requests(att), masters)


__all__ = ["EVIDENCE_SCHEMA", "FINDING_SCHEMA", "KINDS", "MAX_FLOWS", "REMOTE_ACCESS_PORTS",
           "REQUEST_SCHEMA", "MasterMemory", "answered", "evidence", "fallback_masters",
           "findings", "flow_label", "industrial_protocol", "industrial_requests",
           "learn_masters", "merge_requests", "summarise"]

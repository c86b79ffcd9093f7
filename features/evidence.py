"""Product evidence: what every unit of a product shows at every site, per device.

Behaviour (``features.windows``) measures volume, timing and mix, and those move with the
site: another lab, other NTP pools, a device recorded in operation rather than during setup.
The product's evidence does not. At two labs the same TP-Link plug asks for
``devs.tplinkcloud.com``, calls itself ``hs110`` and sends the DHCP parameter list
``1,3,6,12,15,28``. This module collects such identifiers per device over everything observed
(not per window), as a set of ``kind:value`` tokens. Presence only: a token counts once
however often it is seen, so the set does not grow with traffic volume, only (slowly) with
how much of a device's repertoire the capture holds.

Nothing here names a unit: MAC addresses enter only as their vendor prefix, host names only
as words without serials or addresses, SSDP ``USN`` without its ``uuid`` (``features.announce``
strips it). Evidence types (``EVIDENCE_KINDS`` documents each):

========= ===================================================================================
kind      what, and where it comes from
========= ===================================================================================
oui       the manufacturer of the MAC's prefix (Wireshark's OUI table), never the address
dhcp_prl  the DHCP parameter-request list (option 55) the device sends as a client
dhcp_vc   the DHCP vendor class (option 60; DHCPv6 option 16) the device sends
host      words of the names the device gives itself (DHCP host name, mDNS, NetBIOS)
domain    registered domains (``tplinkcloud.com``) of names the device asks for (DNS, TLS
          SNI, HTTP host)
dword     words of those names (``devs``, ``tplinkcloud``), less generic ones
mdns      mDNS service types the device announces or asks for (``_hue._tcp``)
ssdp      SSDP ``SERVER``, ``ST``, ``NT``, ``USN`` (unit part removed) and ``USER-AGENT``
          strings the device sends, whole and as words (``ssdpw``)
ua        HTTP user agents the device sends, whole and as words (``uaw``)
ja4       TLS client fingerprints (JA4) of the device's own TLS sessions
========= ===================================================================================
"""

from __future__ import annotations

import re

import polars as pl

from flockwatch.features.attribution import attribute, master_application, self_named
from flockwatch.features.oui import vendor
from flockwatch.features.windows import ADDRESS_LIKE, GENERIC_NAME_LABELS

EVIDENCE_KINDS: dict[str, str] = {
    "oui": "the MAC prefix's manufacturer (never the address)",
    "dhcp_prl": "DHCP parameter-request list (option 55) sent as a client",
    "dhcp_vc": "DHCP vendor class (option 60, DHCPv6 16) sent as a client",
    "host": "words of names the device gives itself (DHCP host name, mDNS, NetBIOS)",
    "domain": "registered domains of names the device asks for (DNS, TLS SNI, HTTP host)",
    "dword": "words of names the device asks for, less generic ones",
    "mdns": "mDNS service types the device announces or asks for",
    "ssdp": "SSDP SERVER/ST/NT/USN/USER-AGENT strings the device sends",
    "ssdpw": "words of those SSDP strings",
    "ua": "HTTP user agents the device sends",
    "uaw": "words of those user agents",
    "ja4": "TLS client fingerprint (JA4) of the device's own sessions",
}

#: Words that say nothing about the product: the generic labels the window features drop
#: (``GENERIC_NAME_LABELS``) and more that every product's strings share; addresses,
#: numbers and serials (``ADDRESS_LIKE``: a hex string with a digit) and words with 5+ digits
#: are dropped too.
_GENERIC = frozenset(GENERIC_NAME_LABELS) | frozenset({
    "gov", "edu", "api", "pool", "ntp", "time", "http", "https", "the", "and", "for",
    "linux", "upnp", "mozilla", "compatible", "version", "device", "devices", "urn",
    "schemas", "service", "tcp", "udp", "dns", "sd", "lan", "home", "localdomain", "ip",
    "ipv6", "ipv4",
})
_ADDRESS_LIKE = re.compile(ADDRESS_LIKE)
_MANY_DIGITS = re.compile(r"(\D*\d){5,}")
_SPLIT = re.compile(r"[^0-9a-z]+")
_IP_LITERAL = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|[0-9a-f:]*:[0-9a-f:]*)$")
#: Second-level labels under which a country's registrations sit (``co.uk``, ``com.cn``):
#: the registered domain is then three labels. A short list: no public suffix list ships
#: offline with the dependencies, and these cover the clouds IoT devices call.
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "gov", "edu", "ac", "ne", "or", "go"})
_LOCAL_SUFFIX = (".local", ".arpa", ".lan", ".home", ".localdomain", ".internal")


def words(text: str, *, min_len: int = 2) -> list[str]:
    """Product words of a name or string: lower case, split at every non-alphanumeric
    character, less numbers, hex strings with a digit, words with 5+ digits and generic
    words (``_GENERIC``)."""
    out = []
    for w in _SPLIT.split(text.lower()):
        if (len(w) >= min_len and w not in _GENERIC and not _ADDRESS_LIKE.match(w)
                and not _MANY_DIGITS.match(w)):
            out.append(w)
    return out


def registered_domain(name: str) -> str | None:
    """``devs.tplinkcloud.com`` -> ``tplinkcloud.com``; None for IP literals, local names and
    single labels."""
    n = name.strip().strip(".").lower()
    if not n or _IP_LITERAL.match(n) or n.endswith(_LOCAL_SUFFIX) or "." not in n:
        return None
    labels = n.split(".")
    k = 3 if (len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL) else 2
    return ".".join(labels[-k:])


def device_evidence(flows: pl.DataFrame, attributed: pl.DataFrame | None = None,
                    by: tuple[str, ...] = ("source", "device_id")) -> pl.DataFrame:
    """One row per device (``by`` columns): ``evidence``, the sorted distinct ``kind:value``
    tokens of everything the device showed in ``flows``."""
    att = attribute(flows) if attributed is None else attributed
    schema: dict[str, pl.DataType] = {**{k: pl.String() for k in by},
                                      "evidence": pl.List(pl.String)}
    if att.height == 0:
        return pl.DataFrame(schema=schema)
    if "announcements" not in att.columns:
        att = att.with_columns(pl.lit(None, dtype=pl.String).alias("announcements"))
    master = master_application()
    out_ = pl.col("direction") == "out"
    dhcp = master.is_in(["DHCP", "DHCPV6"])
    own_name = self_named()
    asked = out_ & ~dhcp & ~master.is_in(["MDNS", "NetBIOS", "LLMNR", "SSDP"])
    tls = master.is_in(["TLS", "QUIC", "DTLS"])
    cols = list(by)
    att = att.select(
        *cols, "mac",
        pl.when(own_name).then(pl.col("server_name")).alias("_host"),
        pl.when(asked).then(pl.col("server_name")).alias("_asked"),
        pl.when(dhcp & own_name).then(pl.col("client_fingerprint")).alias("_prl"),
        pl.when(out_ & tls).then(pl.col("client_fingerprint")).alias("_ja4"),
        pl.when(out_).then(pl.col("user_agent")).alias("_ua"),
        pl.col("announcements"),
        out_.alias("_out"),
    )
    g = att.group_by(cols).agg(
        pl.col("mac").drop_nulls().first(),
        pl.col("_host").drop_nulls().unique(),
        pl.col("_asked").drop_nulls().unique(),
        pl.col("_prl").drop_nulls().unique(),
        pl.col("_ja4").drop_nulls().unique(),
        pl.col("_ua").drop_nulls().unique(),
        # the device's own announcements: ``>`` entries of flows it initiated, ``<`` of
        # those it answered
        pl.when(pl.col("_out")).then(pl.lit(">")).otherwise(pl.lit("<"))
        .add(pl.col("announcements")).drop_nulls().unique().alias("_ann"),
    )
    rows = []
    for r in g.iter_rows(named=True):
        rows.append({**{k: r[k] for k in cols}, "evidence": sorted(_tokens(r))})
    return pl.DataFrame(rows, schema=schema)


def merge_evidence(parts: list[pl.DataFrame], by: tuple[str, ...] = ("source", "device_id")
                   ) -> pl.DataFrame:
    """The evidence of a whole input from its parts' (``device_evidence`` of each): a
    device's tokens over everything are the union of its tokens in each part (presence
    only, see the module docstring)."""
    parts = [p for p in parts if p.height]
    if len(parts) <= 1:
        return parts[0] if parts else pl.DataFrame(schema={**{k: pl.String() for k in by},
                                                            "evidence": pl.List(pl.String)})
    return pl.concat(parts).group_by(list(by)).agg(
        pl.col("evidence").explode().drop_nulls().unique().sort())


#: What each kind of evidence token is, for a person (``kind:value`` tokens of ``_tokens``).
EVIDENCE_KINDS = {
    "oui": "MAC vendor (OUI)", "host": "word of its host name", "domain": "cloud domain",
    "dword": "word of a name it asks for", "dhcp_prl": "DHCP parameter list",
    "ja4": "TLS client fingerprint (JA4)", "ua": "user agent", "uaw": "word of its user agent",
    "dhcp_vc": "DHCP vendor class", "mdns": "mDNS service", "ssdp": "SSDP announcement",
    "ssdpw": "word of its SSDP announcements",
}


def _tokens(r: dict[str, object]) -> set[str]:
    toks: set[str] = set()
    v = vendor(r.get("mac"))  # type: ignore[arg-type]
    if v and not v.startswith("("):
        toks.add(f"oui:{v}")
    for h in r["_host"]:  # type: ignore[attr-defined]
        toks.update(f"host:{w}" for w in words(h.removesuffix(".local")))
    for n in r["_asked"]:  # type: ignore[attr-defined]
        d = registered_domain(n)
        if d is None:
            continue
        toks.add(f"domain:{d}")
        toks.update(f"dword:{w}" for w in words(n))
    toks.update(f"dhcp_prl:{p}" for p in r["_prl"])  # type: ignore[attr-defined]
    toks.update(f"ja4:{j}" for j in r["_ja4"])  # type: ignore[attr-defined]
    for ua in r["_ua"]:  # type: ignore[attr-defined]
        toks.add(f"ua:{ua.strip()[:200]}")
        toks.update(f"uaw:{w}" for w in words(ua, min_len=3))
    for marked in r["_ann"]:  # type: ignore[attr-defined]
        mark, text = marked[0], marked[1:]
        for entry in text.split("\n"):
            if len(entry) < 2 or entry[0] != mark or "=" not in entry:
                continue
            kind, _, value = entry[1:].partition("=")
            value = value.strip()
            if not value:
                continue
            if kind in ("dhcp_vendor_class", "dhcpv6_vendor_class"):
                toks.add(f"dhcp_vc:{value}")
            elif kind == "mdns_service":
                toks.add(f"mdns:{value.lower()}")
            elif kind.startswith("ssdp_"):
                toks.add(f"ssdp:{kind[5:]}={value}")
                toks.update(f"ssdpw:{w}" for w in words(value, min_len=3))
    return toks


#: Words in a device's own strings that name its kind of product, per category: what a
#: never-seen product's host name, cloud host, SSDP device type or mDNS service says of
#: what it is (``u011.cam.immedia-semi.com`` is a camera's, ``_ipp._tcp`` a printer's).
#: Applied only where the model is unknown (``category_hints``); each category's aliases
#: are the names label sets give it, so a hint lands on the training set's own name.
CATEGORY_WORDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # category: (words, aliases of the category's name in label sets)
    "camera": (frozenset({"cam", "camera", "ipcam", "webcam", "netcam", "nvr", "dvr",
                          "doorbell"}), frozenset({"camera", "ip_camera", "cam", "webcam"})),
    "printer": (frozenset({"printer", "ipp", "ipps", "laserjet", "officejet", "deskjet",
                           "pdl", "printing"}), frozenset({"printer"})),
    "tv": (frozenset({"tv", "roku", "googlecast", "mediarenderer", "smarttv", "dial"}),
           frozenset({"tv", "smart_tv", "television", "streaming"})),
    "speaker": (frozenset({"speaker", "sonos", "raop", "soundbar"}),
                frozenset({"speaker", "smart_speaker", "audio"})),
    "smart_plug": (frozenset({"plug", "smartplug", "outlet", "socket", "controllee"}),
                   frozenset({"smart_plug", "plug", "outlet"})),
    "hub_gateway": (frozenset({"hub", "bridge", "gateway", "ipbridge", "homehub"}),
                    frozenset({"hub_gateway", "hub", "gateway", "bridge"})),
    "thermostat": (frozenset({"thermostat", "hvac"}), frozenset({"thermostat"})),
    "light": (frozenset({"bulb", "lamp", "lightstrip"}),
              frozenset({"light", "bulb", "lighting", "smart_light"})),
}
_HINT_KINDS = ("host", "dword", "ssdpw", "mdns")


def category_hints(tokens: list[str] | set[str]) -> dict[str, int]:
    """Categories the device's own words name (``CATEGORY_WORDS``), with how many of its
    words name each."""
    found: dict[str, int] = {}
    for t in tokens:
        kind, _, value = t.partition(":")
        if kind not in _HINT_KINDS:
            continue
        ws = set(_SPLIT.split(value.lower())) if kind == "mdns" else {value.lower()}
        for cat, (names, _) in CATEGORY_WORDS.items():
            n = len(ws & names)
            if n:
                found[cat] = found.get(cat, 0) + n
    return found


class EvidenceMemory:
    """Evidence of each device accumulated over successive inputs: the live sensor sees a
    device a window at a time, and its DHCP exchange or first-boot lookups happen in one window
    of many, while identification should rest on everything observed. Bounded: at most
    ``max_tokens`` tokens a device (the first kept) and ``max_devices`` devices (the least
    recently seen forgotten first)."""

    def __init__(self, *, max_tokens: int = 512, max_devices: int = 100_000) -> None:
        self.max_tokens = max_tokens
        self.max_devices = max_devices
        self._seen: dict[tuple[str, ...], set[str]] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def tokens(self, *key: str) -> set[str]:
        return set(self._seen.get(tuple(key), ()))

    def merge(self, evidence: pl.DataFrame, by: tuple[str, ...] = ("source", "device_id")
              ) -> pl.DataFrame:
        """``evidence`` (``device_evidence`` output) with each device's remembered tokens
        added; what it shows now is remembered."""
        rows = []
        for r in evidence.iter_rows(named=True):
            key = tuple(str(r[k]) for k in by)
            mem = self._seen.pop(key, set())  # re-inserted: most recently seen last
            for t in r["evidence"] or ():
                if len(mem) >= self.max_tokens:
                    break
                mem.add(t)
            self._seen[key] = mem
            rows.append({**{k: r[k] for k in by}, "evidence": sorted(mem)})
        while len(self._seen) > self.max_devices:
            self._seen.pop(next(iter(self._seen)))
        return pl.DataFrame(rows, schema=evidence.schema) if rows else evidence


__all__ = ["CATEGORY_WORDS", "EVIDENCE_KINDS", "EvidenceMemory", "category_hints",
           "device_evidence", "merge_evidence", "registered_domain", "words"]

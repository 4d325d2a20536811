"""Quantities in words, as goals are written and limits are reported."""

from __future__ import annotations


def decimal_bytes(n: float) -> str:
    """Bytes in decimal units (kB = 1,000 bytes), as goals are written."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n:g} bytes"

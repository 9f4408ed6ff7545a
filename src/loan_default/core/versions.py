"""The order of model versions, defined once for every list of them the service shows.

The MLflow registry numbers versions as strings, so "9" must sort before "10" and text order
will not do. Names that are not numbers (none come from the registry; tests and hand-made stores
use them) sort after every number, in text order.
"""

from __future__ import annotations


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numbers in numeric order, then other names in text order."""
    return (0, int(version), version) if version.isdecimal() else (1, 0, version)

"""API keys and their scopes, as `API_KEYS`, `API_KEY` and `API_KEY_HASHES` spell them.

Each comma-separated entry is a key (or its sha256 hex digest) with an optional scope list after
its last `:`: `key1,key2:score+audit`. An entry without one gets `score` only, so deployments
configured before scopes existed keep working unchanged.

The text after the last `:` is *always* the scope list, never part of the key: a typo such as
`key2:score+audti` must stop the start-up naming `audti`, not quietly become a different key
with the default scope. A key that itself contains `:` is written with its scopes spelled out
(`ab:cd:score`); keys from `openssl rand -hex` or base64 never contain one.

Errors name the variable and the entry's position, never the key (they reach the start-up
output, and a pasted key is a secret).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

#: Who may do what. `score`: predict and batch jobs. `audit`: read any decision, export, and
#: report outcomes. `outcomes`: report outcomes (whether decided applicants defaulted) and
#: nothing else, for the system that feeds them (collections, servicing), which need not read
#: decisions. `admin`: model promote/rollback (should those ever be exposed over HTTP).
#: Independent: a key holds exactly the scopes it lists (an auditor's key need not be able to
#: score).
SCOPES: Final = ("score", "audit", "outcomes", "admin")
SCORE: Final = "score"
AUDIT: Final = "audit"
OUTCOMES: Final = "outcomes"
ADMIN: Final = "admin"
#: The scopes of an entry written without a suffix (every key before scopes existed).
DEFAULT_SCOPES: Final = frozenset({SCORE})

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


def sha256_hex(key: str) -> str:
    """The digest auth compares (and `key_id` is a prefix of)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One configured key: its digest, its scopes, and where it was written (for errors)."""

    digest: str
    scopes: frozenset[str]
    source: str
    """`API_KEYS entry 2`: names the entry without naming the key."""


def split_entry(entry: str, *, source: str) -> tuple[str, frozenset[str]]:
    """`key:score+audit` -> (`key`, {score, audit}); `key` -> (`key`, {score}).

    Raises ValueError naming unknown scopes, an empty scope list or an empty key.
    """
    key, sep, suffix = entry.rpartition(":")
    if not sep:
        key, scopes = entry.strip(), DEFAULT_SCOPES
    else:
        key = key.strip()
        names = [n.strip().lower() for n in suffix.split("+")]
        if not any(names):
            raise ValueError(f"{source} has no scope after ':' (one of {', '.join(SCOPES)})")
        unknown = [n for n in names if n not in SCOPES]
        if unknown:
            raise ValueError(
                f"{source} names unknown scope(s) {', '.join(repr(n) for n in unknown)}; "
                f"known: {', '.join(SCOPES)} (the text after the last ':' is always the scope "
                "list: a key containing ':' is written as KEY:SCOPES)"
            )
        scopes = frozenset(names)
    if not key:
        raise ValueError(f"{source} has an empty key")
    return key, scopes


def parse_entries(text: str | None, *, variable: str, hashed: bool) -> list[KeyEntry]:
    """Every entry of one variable; `hashed`: the keys are sha256 hex digests (any case)."""
    entries: list[KeyEntry] = []
    raw = [e for e in (text or "").split(",") if e.strip()]
    for position, entry in enumerate(raw, start=1):
        source = f"{variable} entry {position}" if len(raw) > 1 else variable
        key, scopes = split_entry(entry, source=source)
        if hashed:
            digest = key.lower()
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(f"{source} is not a sha256 hex digest (64 hex digits)")
        else:
            digest = sha256_hex(key)
        entries.append(KeyEntry(digest, scopes, source))
    return entries


def scopes_by_digest(entries: Iterable[KeyEntry]) -> dict[str, frozenset[str]]:
    """digest -> scopes; the same key listed twice with different scopes is refused (which
    would it be?), listed twice alike it is one key (as when rotating through two variables)."""
    found: dict[str, KeyEntry] = {}
    for entry in entries:
        seen = found.setdefault(entry.digest, entry)
        if seen.scopes != entry.scopes:
            raise ValueError(
                f"{seen.source} and {entry.source} are the same API key with different scopes "
                f"({format_scopes(seen.scopes)} vs {format_scopes(entry.scopes)}); list it once"
            )
    return {digest: entry.scopes for digest, entry in found.items()}


def format_scopes(scopes: Iterable[str]) -> str:
    """`score+audit`, in SCOPES order (the configuration syntax)."""
    chosen = set(scopes)
    return "+".join(s for s in SCOPES if s in chosen)

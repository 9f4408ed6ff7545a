"""Untrusted JSON batch bodies: their shape is bounded before anything is parsed.

The item count is read off a byte scan of the body before pydantic validates a single item, and
the error list is capped; duplicate feature keys are refused (the JSON parsers keep the last
value silently, so a row would be scored on a value the client may not have meant). The CSV
counterpart is `csv_input`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from loan_default.core.errors import InvalidInput
from loan_default.core.json_keys import RepeatedKeys
from loan_default.features import RAW_FEATURES, REFERENCE, is_reference, rows_within_bounds

#: Values a batch body may hold per allowed item (containers and separators): an item with the
#: three features and a `reference` uses 5. The slack lets an item with a few unknown fields be
#: answered with the 422 naming them rather than with this count.
MAX_JSON_VALUES_PER_ITEM: Final = 32


def max_json_values(limit: int) -> int:
    """The most JSON values a body of `limit` items may hold (MAX_JSON_VALUES_PER_ITEM each)."""
    return MAX_JSON_VALUES_PER_ITEM * limit + 64


def within_bounds(body: bytes, limit: int) -> bool:
    """True when byte counts alone prove what `json_shape` would check: at most `limit` + 1
    objects (the items and the top-level one) and at most `max_json_values(limit)` values.

    Every value but the first follows a comma or opens a container, so counting those bytes
    anywhere, strings included, over-counts. Items that are not objects are then bounded by the
    values only; the request model's `max_length` refuses more than `limit` after parsing at most
    that many values (~1 ms at worst). A body this cannot prove (a reference holding commas or
    braces, a hostile one) is scanned by `json_shape`. Why: four `bytes.count` passes cost
    ~0.03 ms where the scan's numpy calls cost ~0.2 ms after an idle gap (cold caches).
    """
    objects = body.count(b"{")
    if objects > limit + 1:
        return False
    return objects + body.count(b"[") + body.count(b",") + 1 <= max_json_values(limit)


#: Key counts of a plainly valid item: the features, and `reference` or not (a parsed object
#: keeps one value per key, so the features present and the count say which keys it has).
_PLAIN_SIZES: Final = frozenset({len(RAW_FEATURES), len(RAW_FEATURES) + 1})
_ABSENT: Final = object()
_NUMBERS: Final = frozenset({int, float})
_FEATURE_GETTERS: Final = tuple(itemgetter(name) for name in RAW_FEATURES)


def plain_rows(
    body: bytes, limit: int
) -> tuple[npt.NDArray[np.float64], list[str | None] | None] | None:
    """The raw matrix and references of a body that is plainly a valid batch, else None.

    None means "not shown valid here", never "invalid": the caller then validates with the
    request model, which stays the authority and whose errors are the 422s. So what must match
    the model is what this accepts: an object holding only `predictions`, a list of 1 to `limit`
    objects, each with exactly the three features and optionally `reference`; `employed` a JSON
    integer, the amounts JSON numbers, every value finite and inside the contract's bounds;
    every reference valid or null. That is what the strict model accepts, and the values are the
    ones it gives: orjson and pydantic both parse numbers correctly rounded and keep a repeated
    key's last value (a test compares the two paths on random bodies). Repeated keys are then
    refused by `duplicate_feature_key`, on either path.

    Why: the model builds an object per item and the rows are read back out of them, ~3.6 ms
    for 1000 items after an idle gap on a slow machine of this kind; this makes C-level passes
    over orjson's dicts instead (`bench/bench_batch_validate.py` prints both).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or len(doc) != 1:
        return None
    items = doc.get("predictions")
    if type(items) is not list or not 1 <= len(items) <= limit:
        return None
    if set(map(type, items)) != {dict}:
        return None
    # Three keys, or four with `reference`: counted, not compared per item (a tuple of keys per
    # item was a third of this function). An item with the features lacking one has a KeyError.
    sizes = list(map(len, items))
    if not set(sizes) <= _PLAIN_SIZES:
        return None
    try:
        employed, balance, salary = (list(map(get, items)) for get in _FEATURE_GETTERS)
    except KeyError:
        return None
    if set(map(type, employed)) != {int}:  # a bool is not an int here, as in the strict model
        return None
    if not set(map(type, balance)) | set(map(type, salary)) <= _NUMBERS:
        return None
    raw = np.array([employed, balance, salary], dtype=np.float64).T
    if not rows_within_bounds(raw):
        return None
    with_fourth = sizes.count(len(RAW_FEATURES) + 1)
    if not with_fourth:
        return raw, None
    given = [item.get(REFERENCE, _ABSENT) for item in items]
    if len(given) - given.count(_ABSENT) != with_fourth:  # a fourth key that is not `reference`
        return None
    references = [None if r is _ABSENT else r for r in given]
    if not all(r is None or is_reference(r) for r in references):
        return None
    return raw, references if any(r is not None for r in references) else None


def too_many_errors(total: int, listed: int, loc: Sequence[str | int]) -> dict[str, Any]:
    """The last entry of a capped error list: says how many were left out (FastAPI's shape)."""
    return {
        "type": "too_many_errors",
        "loc": list(loc),
        "msg": f"{total - listed} more errors not listed (BATCH_MAX_REPORTED_ERRORS={listed})",
    }


@dataclass(frozen=True, slots=True)
class JsonShape:
    items: int | None
    """Items of the top-level array (the last one, as JSON parsers keep), or None."""
    values: int
    """Upper bound of the JSON values in the body (containers + separators + 1)."""


def _structure(b: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """The bytes that shape a JSON document outside its strings: brackets, braces and commas
    (five SIMD comparisons: a 256-entry table lookup took 7x as long on a 60 KB body)."""
    found: npt.NDArray[np.bool_] = b == ord("[")
    for byte in b"]{},":
        found |= b == byte
    return found


def json_shape(body: bytes, key: str = "predictions") -> JsonShape:
    """Count the items of the top-level array `key` without building a single Python object.

    A vectorised scan (numpy, which releases the GIL on arrays this size): quotes not escaped
    delimit strings; outside them `[ {` open and `] }` close, and commas at depth 2 inside the
    array separate its items. Parsing 2 MB of `{}` items with orjson or pydantic
    holds the GIL for 50-150 ms (the event loop with it); this takes ~10-20 ms, GIL released.
    Two passes over the bytes find the quotes and the structural bytes; the rest runs on those
    positions only (about one byte in eight of a batch body: 0.84 -> ~0.45 ms for 1000 items).
    Invalid JSON gives meaningless counts; pydantic then reports it.
    """
    b = np.frombuffer(body, dtype=np.uint8)
    quote_at = b == ord('"')
    if b"\\" in body:
        at = np.flatnonzero(quote_at)
        idx = np.arange(b.size)
        last_plain = np.maximum.accumulate(np.where(b == ord("\\"), -1, idx))
        run = at - 1 - last_plain[np.maximum(at - 1, 0)]
        run[at == 0] = 0
        quote_at[at[(run & 1) == 1]] = False  # escaped: preceded by an odd run of backslashes
    pos = np.flatnonzero(quote_at | _structure(b))  # every index below is into `pos`
    ch = b[pos]
    quote = quote_at[pos]
    outside = ~np.logical_xor.accumulate(quote)  # an even number of quotes so far
    opens = ((ch == ord("[")) | (ch == ord("{"))) & outside
    closes = ((ch == ord("]")) | (ch == ord("}"))) & outside
    commas = (ch == ord(",")) & outside
    values = int(np.count_nonzero(opens)) + int(np.count_nonzero(commas)) + 1
    depth = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int64)
    arrays = np.flatnonzero(opens & (ch == ord("[")) & (depth == 2))
    quotes = np.flatnonzero(quote)
    for start in arrays[::-1].tolist():
        k = int(np.searchsorted(quotes, start)) - 1
        opened, named = int(pos[start]), int(pos[quotes[k]]) if k >= 0 else -1
        if k < 1 or body[named + 1 : opened].strip(b" \t\r\n:"):
            continue  # not `"key": [`
        name = body[int(pos[quotes[k - 1]]) : named + 1]
        if name != f'"{key}"'.encode() and not (b"\\" in name and _decodes_to(name, key)):
            continue
        ends = np.flatnonzero(depth[start:] == 1)
        end = start + int(ends[0]) if ends.size else pos.size
        inner = body[opened + 1 : int(pos[end]) if ends.size else b.size]
        n = int(np.count_nonzero(commas[start:end] & (depth[start:end] == 2)))
        return JsonShape(items=n + 1 if inner.strip(b" \t\r\n") else 0, values=values)
    return JsonShape(items=None, values=values)


def _decodes_to(name: bytes, key: str) -> bool:
    try:
        return bool(json.loads(name) == key)
    except ValueError:
        return False


#: Keys repeated inside one batch item are refused, as on the single predict (unknown keys are
#: refused by the item schema, repeated or not).
_REPEATS: Final = RepeatedKeys((*RAW_FEATURES, REFERENCE))


def _items(doc: Any) -> list[Any]:
    items = doc.get("predictions") if isinstance(doc, dict) else None
    return items if isinstance(items, list) else []


def duplicate_feature_key(body: bytes, n_items: int) -> tuple[int, str] | None:
    """(item index, key) of the first key (a feature or `reference`) repeated inside one batch
    item, else None.

    `body` is a validated batch (every item holds each feature once unless it repeats one).
    """
    try:
        return _REPEATS.find(body, objects=n_items, pick=_items)
    except (ValueError, RecursionError):
        raise InvalidInput(
            "the body could not be checked for duplicate keys (nested too deeply)",
            detail=[{"type": "json_invalid", "loc": ["body"], "msg": "nested too deeply"}],
        ) from None

"""Keys a JSON object names twice. JSON parsers, pydantic's included, keep the last one silently,
so `{"employed": 1, ..., "employed": 0}` is scored as unemployed while a proxy or an audit log
reading the first key saw employed: the API refuses such bodies (predict and batch items alike).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers which of its keys were repeated."""

    __slots__ = ("repeated",)
    repeated: frozenset[str]


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.repeated = (
        frozenset(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        if len(obj) != len(pairs)
        else frozenset()
    )
    return obj


class RepeatedKeys:
    """Finds a repeated key among `names` in the objects of a JSON body."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self._tokens = tuple(f'"{name}"'.encode() for name in self.names)

    def find(
        self, body: bytes, *, objects: int, pick: Callable[[Any], Sequence[Any]]
    ) -> tuple[int, str] | None:
        """(index, name) of the first of `names` repeated inside one of the objects `pick`
        selects from the parsed body (at most `objects` of them), else None.

        Fast path (~0.3 us per name and KB): with no backslash no key can be escaped, so each
        quoted name occurring at most `objects` times proves nothing is repeated. Only otherwise
        (a repeat, or a name used as a value) is the body parsed, with a pairs hook, to be exact.
        Raises the parser's ValueError (not JSON) and RecursionError (nested too deeply).
        """
        if b"\\" not in body:
            for token in self._tokens:  # a loop, not all(<generator>): this runs per predict
                if body.count(token) > objects:
                    break
            else:
                return None
        doc = json.loads(body, object_pairs_hook=_object_pairs)
        for i, obj in enumerate(pick(doc)):
            repeated: frozenset[str] = getattr(obj, "repeated", frozenset())
            for name in self.names:
                if name in repeated:
                    return i, name
        return None

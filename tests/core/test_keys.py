"""API keys with scopes: the syntax of API_KEYS / API_KEY / API_KEY_HASHES and its refusals."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from loan_default.core import keys
from loan_default.core.config import EXAMPLE_API_KEY, Settings

pytestmark = pytest.mark.unit

OPAQUE = "opaque-0123456789"
#: Short names for the three variables, so the made-up keys below are not `api_key = "..."`
#: assignments to the repository's secret scan (tests/hardening/test_security.py).
_FIELDS = {"plain": "api_keys", "single": "api_key", "hashed": "api_key_hashes"}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _settings(**values: object) -> Settings:
    """`plain`, `single`, `hashed`: API_KEYS, API_KEY, API_KEY_HASHES; other names as is."""
    named = {_FIELDS.get(k, k): v for k, v in values.items()}
    return Settings(_env_file=None, **{"environment": "test", **named})  # type: ignore[call-arg]


def _refused(**values: object) -> str:
    with pytest.raises(ValidationError) as err:
        _settings(**values)
    return str(err.value)


@pytest.mark.parametrize(
    ("entry", "key", "scopes"),
    [
        ("k1", "k1", {"score"}),
        ("k1:score", "k1", {"score"}),
        ("k1:audit", "k1", {"audit"}),
        ("k1:score+audit+admin", "k1", {"score", "audit", "admin"}),
        (" k1 : Score + AUDIT ", "k1", {"score", "audit"}),
        ("k1:audit+audit", "k1", {"audit"}),
        ("a:b:score", "a:b", {"score"}),  # a key with ':' spells its scopes out
    ],
)
def test_an_entry_is_a_key_and_its_scopes(entry: str, key: str, scopes: set[str]) -> None:
    assert keys.split_entry(entry, source="API_KEYS") == (key, frozenset(scopes))


def test_a_key_without_scopes_gets_score_only_as_before() -> None:
    settings = _settings(plain="k1, k2")
    assert settings.accepted_keys == ("k1", "k2")
    assert settings.key_scopes == {_digest("k1"): {"score"}, _digest("k2"): {"score"}}


def test_plain_single_and_hashed_keys_carry_their_scopes() -> None:
    settings = _settings(
        plain="k1,k2:score+audit",
        single="k3:admin",
        hashed=f"{_digest(OPAQUE).upper()}:audit",
    )
    assert settings.accepted_keys == ("k1", "k2", "k3")
    assert settings.key_scopes == {
        _digest("k1"): {"score"},
        _digest("k2"): {"score", "audit"},
        _digest("k3"): {"admin"},
        _digest(OPAQUE): {"audit"},
    }


@pytest.mark.parametrize(
    ("values", "variable", "named"),
    [
        ({"plain": "k1,k2:score+audti"}, "API_KEYS", "'audti'"),
        ({"plain": "k1:read+write"}, "API_KEYS", "'read', 'write'"),
        ({"single": "k3:scroe"}, "API_KEY", "'scroe'"),
        ({"hashed": f"{'a' * 64}:auditor"}, "API_KEY_HASHES", "'auditor'"),
        ({"plain": "a:b"}, "API_KEYS", "'b'"),  # ':' in a key needs the scopes spelt out
    ],
)
def test_unknown_scope_names_are_refused_naming_them(
    values: dict[str, str], variable: str, named: str
) -> None:
    message = _refused(**values)
    assert variable in message
    assert f"unknown scope(s) {named}" in message
    assert "known: score, audit, outcomes, admin" in message


@pytest.mark.parametrize("entry", ["k1:", "k1: + ", ":score"])
def test_an_empty_scope_list_or_key_is_refused(entry: str) -> None:
    message = _refused(plain=entry)
    assert "API_KEYS" in message
    assert "no scope after ':'" in message or "empty key" in message


@pytest.mark.parametrize("digest", ["abc123", OPAQUE, "g" * 64, _digest(OPAQUE) + "00"])
def test_a_hash_that_is_not_a_sha256_hex_digest_is_refused_without_echoing_it(
    digest: str,
) -> None:
    message = _refused(plain="", hashed=f"{'0' * 64},{digest}:audit")
    assert "API_KEY_HASHES entry 2 is not a sha256 hex digest" in message
    assert OPAQUE not in message.split("input_value=")[0]


@pytest.mark.parametrize(
    "values",
    [
        {"plain": f"{OPAQUE}:score,{OPAQUE}:score+audit"},
        {"plain": f"k1,{OPAQUE}", "single": f"{OPAQUE}:audit"},
        {"plain": f"{OPAQUE}:score", "hashed": f"{_digest(OPAQUE)}:score+audit"},
    ],
)
def test_the_same_key_with_different_scopes_is_refused_naming_the_entries(
    values: dict[str, str],
) -> None:
    message = _refused(**values)
    assert "are the same API key with different scopes" in message
    assert "score vs score+audit" in message or "score vs audit" in message
    assert OPAQUE not in message.split("[type=value_error")[0]


def test_the_same_key_with_the_same_scopes_is_one_key() -> None:
    settings = _settings(
        plain=f"{OPAQUE}:audit+score,k1",
        hashed=f"{_digest(OPAQUE)}:score+audit",
    )
    assert settings.key_scopes == {_digest(OPAQUE): {"score", "audit"}, _digest("k1"): {"score"}}


@pytest.mark.parametrize(
    "values",
    [
        {"plain": EXAMPLE_API_KEY},
        {"plain": f"real-key-0123456789,{EXAMPLE_API_KEY}:score+audit"},
        {"plain": "real-key-0123456789", "single": f"{EXAMPLE_API_KEY}:admin"},
        {"plain": "", "hashed": f"{_digest(EXAMPLE_API_KEY)}:audit"},
    ],
)
def test_production_refuses_the_example_key_whatever_its_scopes(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="refusing to start in production"):
        _settings(**{**values, "environment": "production"})
    _settings(**values)  # accepted outside production


def test_no_key_at_all_is_refused() -> None:
    assert "no API key configured" in _refused(plain=" , ", hashed="")


def test_format_scopes_is_the_configuration_syntax() -> None:
    assert keys.format_scopes({"admin", "score"}) == "score+admin"

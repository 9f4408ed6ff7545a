"""Every Settings field is documented in README.md's table and in .env.example."""

from __future__ import annotations

import re

import pytest

from loan_default.core.config import EXAMPLE_API_KEY, Settings
from tests.deploy.conftest import REPO
from tests.deploy.settings_doc import END, README, START, rows

pytestmark = pytest.mark.unit

FIELDS = [name.upper() for name in Settings.model_fields]


def _readme_table() -> str:
    text = README.read_text()
    assert START in text, "README.md lost its env-table markers"
    assert END in text, "README.md lost its env-table markers"
    return text.split(START, 1)[1].split(END, 1)[0]


@pytest.mark.parametrize("name", FIELDS)
def test_field_in_readme_table(name: str) -> None:
    assert f"| `{name}` |" in _readme_table(), (
        f"{name} missing from README.md: run `python -m tests.deploy.settings_doc --write`"
    )


@pytest.mark.parametrize("name", FIELDS)
def test_field_in_env_example(name: str) -> None:
    text = (REPO / ".env.example").read_text()
    assert re.search(rf"^(# )?{name}=", text, re.MULTILINE), f"{name} missing from .env.example"


def test_every_field_has_a_meaning() -> None:
    assert all(meaning for _, meaning, _ in rows())


def test_env_example_is_valid_and_uses_the_example_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FIELDS:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=REPO / ".env.example")  # type: ignore[call-arg]
    assert settings.accepted_keys == (EXAMPLE_API_KEY,)


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = README.read_text()
    first_section = text.split("\n## ", 1)[0]
    assert "make run" in first_section
    assert "make test" in first_section
    assert "X-API-Key" in text

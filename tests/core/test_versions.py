"""The one order of model versions (registry numbers as strings)."""

from __future__ import annotations

import pytest

from loan_default.core.versions import version_key

pytestmark = pytest.mark.unit


def test_numbers_sort_as_numbers_and_names_after_them() -> None:
    versions = ["10", "champion", "9", "2", "b-test", "100"]
    assert sorted(versions, key=version_key) == ["2", "9", "10", "100", "b-test", "champion"]

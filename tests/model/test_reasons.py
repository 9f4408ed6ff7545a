"""Reason codes: the pure ranking and table rules, then the real trained bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loan_default.features import FEATURE_NAMES, build_matrix, feature_row
from loan_default.model import reasons as rs
from loan_default.model.bundle import (
    BOOSTER_FILE,
    CARD_FILE,
    ONNX_FILE,
    ModelBundle,
    ModelLoadError,
    export_onnx,
)
from loan_default.model.card import ModelCard
from loan_default.training.candidates import MONOTONE_DIRECTIONS

FEATURES = ("a", "b", "c", "d", "e")


def _table(*codes: tuple[str, list[str]]) -> rs.ReasonTable:
    return rs.ReasonTable(
        version="t", codes=[rs.ReasonCode(code=c, text=f"text {c}", features=f) for c, f in codes]
    )


def _ranker(table: rs.ReasonTable, used: str = "abcde") -> rs.ReasonRanker:
    return rs.ReasonRanker(table, feature_names=FEATURES, used=frozenset(used))


ONE_EACH = _table(("A", ["a"]), ("B", ["b"]), ("C", ["c"]), ("D", ["d"]), ("E", ["e"]))


# --- pure: ranking ---------------------------------------------------------------------------
@pytest.mark.unit
def test_only_raising_features_largest_first() -> None:
    rows = np.array([[0.1, -2.0, 0.5, 0.0, 0.3], [-1.0, -0.1, 0.0, -0.0, -3.0]])
    assert _ranker(ONE_EACH).rank(rows) == [("C", "E", "A"), ()]


@pytest.mark.unit
def test_at_most_four_codes() -> None:
    row = np.array([[0.5, 0.4, 0.3, 0.2, 0.1]])
    assert rs.MAX_REASONS == 4
    assert _ranker(ONE_EACH).rank(row) == [("A", "B", "C", "D")]


@pytest.mark.unit
def test_ties_follow_table_order() -> None:
    row = np.array([[0.2, 0.7, 0.2, 0.7, 0.2]])
    assert _ranker(ONE_EACH).rank(row) == [("B", "D", "A", "C")]
    reordered = _table(("E", ["e"]), ("D", ["d"]), ("C", ["c"]), ("B", ["b"]), ("A", ["a"]))
    assert _ranker(reordered).rank(row) == [("D", "B", "E", "C")]


@pytest.mark.unit
def test_features_of_one_code_add_up_positive_parts_only() -> None:
    table = _table(("AB", ["a", "b"]), ("C", ["c"]), ("DE", ["d", "e"]))
    # AB = 0.3 + 0.3 beats C = 0.5; DE counts only e's +0.1 (d lowered risk and is not netted).
    row = np.array([[0.3, 0.3, 0.5, -0.9, 0.1]])
    assert _ranker(table).rank(row) == [("AB", "C", "DE")]


@pytest.mark.unit
def test_unused_feature_is_never_named() -> None:
    row = np.array([[0.1, 5.0, 0.2, 0.0, 0.0]])
    assert _ranker(ONE_EACH, used="acde").rank(row) == [("C", "A")]
    # A code whose features are all unused is dropped; a shared code keeps its used part.
    table = _table(("AB", ["a", "b"]), ("C", ["c"]), ("DE", ["d", "e"]))
    assert _ranker(table, used="bcd").rank(np.array([[9.0, 0.1, 0.2, 0.0, 9.0]])) == [("C", "AB")]


@pytest.mark.unit
def test_extra_bias_column_and_empty_input() -> None:
    with_bias = np.array([[0.0, 0.0, 0.0, 0.0, 0.1, 7.0]])
    assert _ranker(ONE_EACH).rank(with_bias) == [("E",)]
    assert _ranker(ONE_EACH).rank(np.empty((0, 6))) == []
    assert _ranker(ONE_EACH, used="").rank(with_bias) == [()]


@given(
    st.lists(
        st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=5, max_size=5),
        min_size=1,
        max_size=40,
    ),
    st.randoms(use_true_random=False),
)
@settings(max_examples=200, deadline=None)
@pytest.mark.unit
def test_rank_is_row_local_and_matches_a_reference(rows: list[list[float]], rnd) -> None:  # type: ignore[no-untyped-def]
    x = np.asarray(rows, dtype=np.float32)
    ranker = _ranker(ONE_EACH)
    got = ranker.rank(x)
    for i, row in enumerate(x):
        ref = sorted(
            ((float(v), j) for j, v in enumerate(row) if v > 0), key=lambda t: (-t[0], t[1])
        )
        assert got[i] == tuple("ABCDE"[j] for _, j in ref[: rs.MAX_REASONS])
        assert ranker.rank(x[i : i + 1]) == [got[i]]
    perm = list(range(len(x)))
    rnd.shuffle(perm)
    assert ranker.rank(x[perm]) == [got[i] for i in perm]


# --- pure: the table -------------------------------------------------------------------------
@pytest.mark.unit
def test_table_rejects_duplicate_codes_and_shared_features() -> None:
    with pytest.raises(ValueError, match="unique"):
        _table(("A", ["a"]), ("A", ["b"]))
    with pytest.raises(ValueError, match="one reason code only"):
        _table(("A", ["a"]), ("B", ["a", "b"]))
    with pytest.raises(ValueError, match="lacks"):
        rs.ReasonRanker(_table(("Z", ["z"])), feature_names=FEATURES, used=frozenset("a"))


@pytest.mark.unit
def test_directional_texts_only_for_constrained_features() -> None:
    constrained = rs.build_table(MONOTONE_DIRECTIONS)
    assert constrained.version == rs.REASONS_VERSION
    assert constrained.features == set(FEATURE_NAMES)
    assert [c.code for c in constrained.codes] == [
        "BALANCE_HIGH",
        "BALANCE_TO_INCOME_HIGH",
        "INCOME_LOW",  # constrained -1: more income never raises the risk
        "NOT_STUDENT",
    ]
    assert constrained.text("BALANCE_HIGH").endswith("is high")
    assert constrained.text("INCOME_LOW") == "Annual income is low"
    assert "Level of annual income" in rs.build_table({}).text("INCOME_LEVEL")
    neutral = rs.build_table({})
    assert [c.code for c in neutral.codes] == [
        "BALANCE_LEVEL",
        "BALANCE_TO_INCOME_LEVEL",
        "INCOME_LEVEL",
        "STUDENT_STATUS",
    ]
    assert rs.build_table({"annual_salary": -1}).codes[2].code == "INCOME_LOW"
    # A code means one text in one version, whatever the constraints.
    texts: dict[str, str] = {}
    for t in (constrained, neutral, rs.build_table({"annual_salary": -1})):
        for c in t.codes:
            assert texts.setdefault(c.code, c.text) == c.text
    with pytest.raises(KeyError):
        neutral.text("BALANCE_HIGH")


# --- the real trained bundle -----------------------------------------------------------------
@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    """10,000 applicants over the training ranges (incl. both employment values)."""
    rng = np.random.default_rng(13)
    n = 10_000
    raw = np.column_stack(
        [rng.integers(0, 2, n), rng.uniform(0, 32_000, n), rng.uniform(1, 900_000, n)]
    )
    return build_matrix(raw)


@pytest.mark.integration
def test_card_records_constraints_and_table(bundle) -> None:  # type: ignore[no-untyped-def]
    assert bundle.card.monotone_constraints == dict(MONOTONE_DIRECTIONS)
    assert bundle.card.reasons == rs.build_table(MONOTONE_DIRECTIONS)
    assert bundle.reason_table is bundle.card.reasons


@pytest.mark.integration
def test_codes_are_the_positive_contributions_in_order(bundle, sample) -> None:  # type: ignore[no-untyped-def]
    contribs = bundle.contribs(sample)
    codes = bundle.reasons(sample)
    code_of = {f: c.code for c in bundle.reason_table.codes for f in c.features}
    used = rs.used_features(bundle.booster, FEATURE_NAMES)
    for row, got in zip(contribs[:500], codes[:500], strict=True):
        raised = [(float(v), j) for j, v in enumerate(row[:-1]) if v > 0]
        want = [code_of[FEATURE_NAMES[j]] for _, j in sorted(raised, key=lambda t: (-t[0], t[1]))]
        assert got == tuple(want[: rs.MAX_REASONS])
    # Adverse rows all have a reason; a feature without a split is never named.
    adverse = bundle.score(sample).prediction == 1
    assert adverse.any()
    assert all(codes[i] for i in np.flatnonzero(adverse))
    named = {c for row in codes for c in row}
    for j, f in enumerate(FEATURE_NAMES):
        if f not in used:
            assert np.all(contribs[:, j] == 0)
            assert code_of[f] not in named


@pytest.mark.integration
def test_batch_rows_get_their_single_codes(bundle, sample) -> None:  # type: ignore[no-untyped-def]
    full = bundle.reasons(sample)
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(sample))
    assert bundle.reasons(sample[perm]) == [full[i] for i in perm]
    head = sample[:4096]
    for size in (1, 3, 64, 4096):
        chunks = [bundle.reasons(head[lo : lo + size]) for lo in range(0, len(head), size)]
        assert [c for chunk in chunks for c in chunk] == full[:4096]
    for i in rng.choice(len(sample), 200, replace=False):
        assert bundle.reasons_row(sample[i].tolist()) == full[i]
    assert bundle.reasons(sample[:0]) == []


@given(
    rows=st.lists(
        st.tuples(st.integers(0, 1), st.floats(0, 40_000), st.floats(1, 1_000_000)),
        min_size=1,
        max_size=50,
    ),
    rnd=st.randoms(use_true_random=False),
)
@settings(max_examples=60, deadline=None)
@pytest.mark.integration
def test_property_single_equals_batch(bundle, rows, rnd) -> None:  # type: ignore[no-untyped-def]
    singles = [bundle.reasons_row(feature_row(*r)) for r in rows]
    assert bundle.reasons(build_matrix(rows)) == singles
    perm = list(range(len(rows)))
    rnd.shuffle(perm)
    assert bundle.reasons(build_matrix([rows[i] for i in perm])) == [singles[i] for i in perm]


@pytest.mark.integration
def test_explain_row_gives_the_contributions_and_the_same_codes(bundle) -> None:  # type: ignore[no-untyped-def]
    for raw in ([1, 25_000, 40_000], [0, 21_000, 900_000], [1, 500, 300_000]):
        row = feature_row(*raw)
        contributions, codes = bundle.explain_row(row)
        assert contributions == bundle.contributions(*raw)
        assert set(contributions) == {*FEATURE_NAMES, "bias"}
        assert np.array_equal(
            np.float32([contributions[f] for f in FEATURE_NAMES]),
            bundle.contribs(build_matrix([raw]))[0, :-1],
        )
        assert codes == bundle.reasons_row(row)


# --- cards with and without the new fields ---------------------------------------------------
def _write_bundle(bundle, d: Path, card_json: str) -> Path:  # type: ignore[no-untyped-def]
    d.mkdir()
    bundle.booster.save_model(str(d / BOOSTER_FILE))
    (d / ONNX_FILE).write_bytes(export_onnx(bundle.booster))
    (d / CARD_FILE).write_text(card_json)
    return d


@pytest.mark.integration
def test_card_roundtrip_with_new_fields(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    d = _write_bundle(bundle, tmp_path / "new", bundle.card.model_dump_json())
    loaded = ModelBundle.load(d)
    assert loaded.card == bundle.card
    assert loaded.card.reasons == bundle.card.reasons


@pytest.mark.integration
def test_old_card_loads_and_gets_the_neutral_table(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old = json.loads(bundle.card.model_dump_json())
    del old["reasons"], old["monotone_constraints"]
    d = _write_bundle(bundle, tmp_path / "old", json.dumps(old))
    loaded = ModelBundle.load(d)
    assert loaded.card.reasons is None
    assert loaded.card.monotone_constraints == {}
    assert loaded.reason_table == rs.build_table({})
    row = feature_row(1, 25_000, 40_000)
    assert loaded.reasons_row(row)[0] == "BALANCE_LEVEL"
    assert bundle.reasons_row(row)[0] == "BALANCE_HIGH"


@pytest.mark.integration
def test_cards_with_bad_constraints_or_tables_are_refused(bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(bundle.card.model_dump_json())
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        ModelCard.model_validate({**data, "monotone_constraints": {"bank_balance": 2}})
    partial = {"version": "1", "codes": [{"code": "X", "text": "x", "features": ["employed"]}]}
    for i, bad in enumerate(({"monotone_constraints": {"income": 1}}, {"reasons": partial})):
        d = _write_bundle(bundle, tmp_path / str(i), json.dumps({**data, **bad}))
        with pytest.raises(ModelLoadError, match=r"unknown features|covers"):
            ModelBundle.load(d)

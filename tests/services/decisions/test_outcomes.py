"""Outcomes on both stores: recorded once, re-sent without effect, unknown ones reported,
references resolved to their latest decision, conflicts refused whole, read back joined."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa

from loan_default.services.decisions import DecisionStore, batch_decision_id, new_decision_id
from loan_default.services.decisions.errors import OutcomeConflict
from loan_default.services.decisions.outcomes import MAX_LISTED, Outcome, OutcomeColumns
from loan_default.services.decisions.schema import outcomes
from tests.services.decisions.conftest import KEY_B, make_batch, make_record, now_ms

pytestmark = pytest.mark.integration

SEEN = datetime(2026, 6, 30, 12, 0, tzinfo=UTC)


def stored(store: DecisionStore) -> dict[str, tuple[bool, datetime, str]]:
    """decision_id -> (defaulted, observed_at, key_id) of every stored outcome."""
    t = outcomes.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.decision_id, t.defaulted, t.observed_at, t.key_id)).all()
    return {str(r[0]): (bool(r[1]), r[2], r[3]) for r in rows}


def by_id(decision_id: str, defaulted: bool = True, at: datetime = SEEN) -> Outcome:
    return Outcome(defaulted=defaulted, observed_at=at, decision_id=decision_id)


def test_outcomes_are_recorded_once_and_a_resend_changes_nothing(store: DecisionStore) -> None:
    recs = [make_record(i) for i in range(6)]
    store.record_many(recs)
    items = [by_id(r.decision_id, defaulted=bool(i % 2)) for i, r in enumerate(recs[:4])]
    first = store.record_outcomes(items, key_id=KEY_B)
    assert (first.received, first.inserted, first.unchanged, first.unknown) == (4, 4, 0, 0)
    assert first.unknown_items == ()
    before = stored(store)
    assert {k: v[0] for k, v in before.items()} == {
        r.decision_id: bool(i % 2) for i, r in enumerate(recs[:4])
    }
    assert {v[2] for v in before.values()} == {KEY_B}  # the uploader's key id
    # the same outcomes again, one with a later observed_at, plus a new one
    later = [*items[:3], by_id(recs[3].decision_id, True, SEEN + timedelta(days=3))]
    again = store.record_outcomes([*later, by_id(recs[4].decision_id)], key_id="c" * 16)
    assert (again.inserted, again.unchanged, again.unknown) == (1, 4, 0)
    after = stored(store)
    assert {k: after[k] for k in before} == before  # the first report stands, date and uploader
    assert after[recs[4].decision_id][0] is True


def test_unknown_items_are_counted_and_the_first_listed_as_sent(store: DecisionStore) -> None:
    rec = make_record(1)
    store.record_many([rec])
    missing = [new_decision_id() for _ in range(MAX_LISTED + 5)]
    items = [
        by_id(missing[0].upper()),
        Outcome(defaulted=False, observed_at=SEEN, reference="no-such-application"),
        by_id(rec.decision_id),
        by_id("not-a-decision-id"),
        *(by_id(m) for m in missing[1:]),
    ]
    result = store.record_outcomes(items, key_id=KEY_B)
    assert result.inserted == 1
    assert result.unknown == len(missing) + 2
    assert len(result.unknown_items) == MAX_LISTED
    assert result.unknown_items[:4] == (
        missing[0].upper(),
        "no-such-application",
        "not-a-decision-id",
        missing[1],
    )
    assert list(stored(store)) == [rec.decision_id]


def test_a_reference_names_its_latest_decision(store: DecisionStore) -> None:
    t0 = now_ms() - timedelta(hours=2)
    old = make_record(1, at=t0, reference="APP-9")
    new = make_record(2, at=t0 + timedelta(hours=1), reference="APP-9")
    other = make_record(3, at=t0, reference="APP-10")
    store.record_many([new, old, other])
    result = store.record_outcomes(
        [
            Outcome(defaulted=True, observed_at=SEEN, reference="APP-9"),
            Outcome(defaulted=False, observed_at=SEEN, reference="APP-10"),
        ],
        key_id=KEY_B,
    )
    assert (result.inserted, result.unknown) == (2, 0)
    got = stored(store)
    assert set(got) == {new.decision_id, other.decision_id}  # not the earlier APP-9 decision
    # by reference and by id name the same decision: the same outcome is unchanged
    same = store.record_outcomes([by_id(new.decision_id, True)], key_id=KEY_B)
    assert same.unchanged == 1
    # the earlier decision can still be given its own outcome by id
    assert store.record_outcomes([by_id(old.decision_id, False)], key_id=KEY_B).inserted == 1


def test_a_conflict_refuses_the_whole_request(store: DecisionStore) -> None:
    recs = [make_record(i) for i in range(5)]
    store.record_many(recs)
    store.record_outcomes([by_id(recs[0].decision_id, True)], key_id=KEY_B)
    before = stored(store)
    with pytest.raises(OutcomeConflict) as caught:
        store.record_outcomes(
            [
                by_id(recs[1].decision_id, True),  # new, valid: must not be written either
                by_id(recs[0].decision_id, False),  # contradicts the stored outcome
                Outcome(defaulted=True, observed_at=SEEN, reference="no-such"),
            ],
            key_id=KEY_B,
        )
    assert caught.value.status_code == 409
    assert caught.value.detail == {"conflicts": 1, "decision_ids": [recs[0].decision_id]}
    assert recs[0].decision_id in caught.value.message
    assert stored(store) == before


def test_two_different_outcomes_for_one_decision_in_a_request_conflict(
    store: DecisionStore,
) -> None:
    recs = [make_record(i, reference=f"R-{i}") for i in range(3)]
    store.record_many(recs)
    with pytest.raises(OutcomeConflict) as caught:
        store.record_outcomes(
            [
                by_id(recs[2].decision_id, True),
                by_id(recs[1].decision_id, True),
                Outcome(defaulted=False, observed_at=SEEN, reference="R-1"),  # = recs[1]
            ],
            key_id=KEY_B,
        )
    assert caught.value.detail["decision_ids"] == [recs[1].decision_id]
    assert stored(store) == {}
    # the same outcome twice in one request is recorded once (the first item's date kept)
    result = store.record_outcomes(
        [by_id(recs[1].decision_id, True), by_id(recs[1].decision_id, True, SEEN + timedelta(1))],
        key_id=KEY_B,
    )
    assert (result.inserted, result.unchanged) == (1, 1)
    assert stored(store)[recs[1].decision_id][1] == SEEN


def test_concurrent_conflicting_uploads_record_one_outcome(store: DecisionStore) -> None:
    recs = [make_record(i) for i in range(200)]
    store.record_many(recs)
    outcomes: dict[bool, object] = {}

    def upload(defaulted: bool) -> None:
        try:
            outcomes[defaulted] = store.record_outcomes(
                [by_id(r.decision_id, defaulted) for r in recs], key_id=KEY_B
            )
        except OutcomeConflict as exc:
            outcomes[defaulted] = exc

    threads = [threading.Thread(target=upload, args=(d,)) for d in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [v for v in outcomes.values() if isinstance(v, OutcomeConflict)]
    assert len(conflicts) == 1  # exactly one upload won, whole
    got = stored(store)
    assert len(got) == 200
    assert len({v[0] for v in got.values()}) == 1


def test_columns_and_items_record_alike_and_large_uploads_are_chunked(
    store: DecisionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loan_default.services.decisions import outcomes as outcome_module

    monkeypatch.setattr(outcome_module, "CHUNK", 700)  # several staging chunks
    created = now_ms()
    store.record_batch(make_batch("job-out", created, 0, 3000))
    ids = [batch_decision_id("job-out", r, created) for r in range(3000)]
    defaulted = np.arange(3000) % 7 == 0
    columns = OutcomeColumns(
        decision_ids=ids,
        references=[None] * 3000,
        defaulted=defaulted,
        observed_at=np.full(3000, np.datetime64("2026-06-30T12:00:00", "us")),
    )
    assert store.record_outcomes(columns, key_id=KEY_B).inserted == 3000
    got = stored(store)
    assert all(got[i][0] == bool(d) for i, d in zip(ids, defaulted, strict=True))
    assert got[ids[0]][1] == SEEN
    items = [by_id(i, bool(d)) for i, d in zip(ids, defaulted, strict=True)]
    assert store.record_outcomes(items, key_id=KEY_B).unchanged == 3000


def test_outcomes_joined_reads_decisions_with_their_outcomes(store: DecisionStore) -> None:
    t0 = now_ms() - timedelta(hours=3)
    recs = [make_record(i, at=t0 + timedelta(seconds=i)) for i in range(12)]
    store.record_many(recs)
    store.record_outcomes(
        [by_id(r.decision_id, i % 3 == 0) for i, r in enumerate(recs) if i % 2 == 0],
        key_id=KEY_B,
    )
    start, end = t0, t0 + timedelta(seconds=10)  # the last two fall outside
    joined = store.outcomes_joined(start, end, page_size=4)  # three pages
    assert len(joined) == 10
    expected = [(1 if i % 3 == 0 else 0) if i % 2 == 0 else -1 for i in range(10)]
    assert joined.defaulted.tolist() == expected
    assert joined.model_version.tolist() == [r.model_version for r in recs[:10]]
    assert joined.probability.tolist() == [r.probability for r in recs[:10]]
    assert joined.threshold.tolist() == [r.threshold for r in recs[:10]]
    assert joined.prediction.tolist() == [r.prediction for r in recs[:10]]
    assert joined.decided_at.tolist() == [r.decided_at.replace(tzinfo=None) for r in recs[:10]]
    cp = joined.challenger_probability
    assert np.isnan(cp[1])
    assert cp[0] == recs[0].challenger_probability
    only = store.outcomes_joined(start, end, model_version="2")
    assert only.model_version.tolist() == ["2"] * len(only)
    assert len(only) == sum(r.model_version == "2" for r in recs[:10])
    assert len(store.outcomes_joined(end, end + timedelta(hours=1))) == 2
    assert len(store.outcomes_joined(t0 - timedelta(days=9), t0 - timedelta(days=8))) == 0


def test_the_purge_removes_the_outcomes_of_purged_decisions(store: DecisionStore) -> None:
    now = now_ms()
    old = make_record(1, at=now - timedelta(days=200))
    recent = make_record(2, at=now)
    if store.type == "postgresql":
        from loan_default.services.decisions import partitions

        partitions.ensure_months(store.engine, [old.decided_at])
    store.record_many([old, recent])
    store.record_outcomes([by_id(old.decision_id), by_id(recent.decision_id)], key_id=KEY_B)
    assert store.purge(now - timedelta(days=100)) == 1
    assert list(stored(store)) == [recent.decision_id]

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loan_default.training.threshold import confusion_at, select_threshold

pytestmark = pytest.mark.unit

Y = np.array([0, 0, 0, 0, 1, 0, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9])


def brute(y: np.ndarray, p: np.ndarray, score) -> float:  # type: ignore[no-untyped-def]
    best_t, best = None, None
    for t in np.unique(p):
        pred = p >= t
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        fn = int((~pred & (y == 1)).sum())
        s = score(tp, fp, fn)
        if best is None or s > best:
            best_t, best = t, s
    return float(best_t)


def test_f1_threshold_by_hand() -> None:
    # t=0.5: TP=3 FP=1 FN=0 -> F1 = 6/7, the best on this data.
    assert select_threshold(Y, P, objective="f1") == 0.5


def test_recall_target_picks_highest_threshold_reaching_it() -> None:
    assert select_threshold(Y, P, objective="recall>=0.6") == 0.7  # recall 2/3
    assert select_threshold(Y, P, objective="recall>=1.0") == 0.5


def test_cost_objective_trades_misses_for_false_alarms() -> None:
    # A miss costs 10: keep all three defaults (t=0.5, one false alarm, cost 1).
    assert select_threshold(Y, P, objective="cost", cost_fn=10, cost_fp=1) == 0.5
    # False alarms dear: t=0.7 (1 miss, 0 false alarms, cost 1) beats t=0.5 (cost 10).
    assert select_threshold(Y, P, objective="cost", cost_fn=1, cost_fp=10) == 0.7


def test_confusion_counts() -> None:
    tp, fp, fn = confusion_at(Y, P, np.array([0.5, 0.95]))
    assert tp.tolist() == [3, 0]
    assert fp.tolist() == [1, 0]
    assert fn.tolist() == [0, 3]


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        select_threshold(np.zeros(4), P[:4])
    with pytest.raises(ValueError, match="same length"):
        select_threshold(Y, P[:3])
    with pytest.raises(ValueError, match="unknown"):
        select_threshold(Y, P, objective="accuracy")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1)), min_size=4, max_size=60))
def test_f1_matches_brute_force(pairs: list[tuple[int, float]]) -> None:
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    if len(np.unique(y)) < 2:
        return
    t = select_threshold(y, p, objective="f1")

    def f1(tp: int, fp: int, fn: int) -> float:
        return 2 * tp / max(2 * tp + fp + fn, 1)

    tp, fp, fn = (int(v[0]) for v in confusion_at(y, p, np.array([t])))
    best = brute(y, p, f1)
    tpb, fpb, fnb = (int(v[0]) for v in confusion_at(y, p, np.array([best])))
    assert f1(tp, fp, fn) == pytest.approx(f1(tpb, fpb, fnb))

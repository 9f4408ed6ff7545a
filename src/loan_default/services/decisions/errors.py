"""The decision store's errors: unavailable (503), a bad paging cursor (422), and outcomes
that conflict with recorded ones (409)."""

from __future__ import annotations

from loan_default.core.errors import InvalidInput, LoanDefaultError, ServiceUnavailable


class DecisionStoreUnavailable(ServiceUnavailable):
    """The decision store is down, locked or closed. Under DECISION_RECORDING=required the
    prediction is refused (503): an answer whose record was not committed must not leave.
    The message never carries database text (hosts, paths, SQL)."""

    code = "decision_store_unavailable"


class InvalidCursor(InvalidInput):
    """A paging cursor this store did not hand out (or from another query's position)."""


class OutcomeConflict(LoanDefaultError):
    """Outcomes that contradict what is recorded for the same decision (or each other within
    one request): nothing of the request was written. `detail` names the decisions."""

    status_code = 409
    code = "outcome_conflict"

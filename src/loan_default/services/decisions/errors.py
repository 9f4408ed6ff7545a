"""The decision store's errors: unavailable (503) and a bad paging cursor (422)."""

from __future__ import annotations

from loan_default.core.errors import InvalidInput, ServiceUnavailable


class DecisionStoreUnavailable(ServiceUnavailable):
    """The decision store is down, locked or closed. Under DECISION_RECORDING=required the
    prediction is refused (503): an answer whose record was not committed must not leave.
    The message never carries database text (hosts, paths, SQL)."""

    code = "decision_store_unavailable"


class InvalidCursor(InvalidInput):
    """A paging cursor this store did not hand out (or from another query's position)."""

"""The decision record: every decision (a single prediction or a batch row) stored durably,
with its inputs, the model that made it and what it answered, for audit and adverse action.

One module a job: `ids` (time-ordered decision ids), `records` (the record), `batches` (a
chunk's decisions as columns), `schema` (the table), `migrations` + `migrate` (Alembic, run from
code), `engines` (URLs, SQLite/PostgreSQL connection settings), `codec` / `pgcopy` (decisions
as rows and as binary COPY, idempotent insert SQL), `writer` (group commit), `checkpoint`
(SQLite's WAL checkpoints, off the commit path), `writes` (the write transactions and the
partition retry), `partitions` (PostgreSQL monthly partitions and retention), `queries` (filters
and keyset paging), `export` (CSV/Parquet) and `store` (the `DecisionStore` that ties them
together).

Names are exported lazily (PEP 562): `loan-default` registers its `decisions` sub-commands from
`commands`, a light module, and importing it through this package must not load the store,
SQLAlchemy and Arrow (1.4 s) for every command line, `--help` included.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loan_default.services.decisions.batches import DecisionBatch
    from loan_default.services.decisions.errors import DecisionStoreUnavailable, InvalidCursor
    from loan_default.services.decisions.ids import (
        batch_decision_id,
        batch_decision_ids,
        decided_at_of,
        new_decision_id,
        valid_decision_id,
    )
    from loan_default.services.decisions.migrate import upgrade
    from loan_default.services.decisions.partitions import ensure_partitions, retention_cutoff
    from loan_default.services.decisions.records import DecisionRecord
    from loan_default.services.decisions.store import DecisionStore

_HOMES = {
    "DecisionBatch": "batches",
    "DecisionRecord": "records",
    "DecisionStore": "store",
    "DecisionStoreUnavailable": "errors",
    "InvalidCursor": "errors",
    "batch_decision_id": "ids",
    "batch_decision_ids": "ids",
    "decided_at_of": "ids",
    "ensure_partitions": "partitions",
    "new_decision_id": "ids",
    "retention_cutoff": "partitions",
    "upgrade": "migrate",
    "valid_decision_id": "ids",
}
__all__ = [
    "DecisionBatch",
    "DecisionRecord",
    "DecisionStore",
    "DecisionStoreUnavailable",
    "InvalidCursor",
    "batch_decision_id",
    "batch_decision_ids",
    "decided_at_of",
    "ensure_partitions",
    "new_decision_id",
    "retention_cutoff",
    "upgrade",
    "valid_decision_id",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)

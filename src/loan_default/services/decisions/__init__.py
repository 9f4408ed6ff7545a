"""The decision record: every decision (a single prediction or a batch row) stored durably,
with its inputs, the model that made it and what it answered, for audit and adverse action.

One module a job: `ids` (time-ordered decision ids), `records` (the record), `batches` (a
chunk's decisions as columns), `schema` (the table), `migrations` + `migrate` (Alembic, run from
code), `engines` (URLs, SQLite/PostgreSQL connection settings), `codec` / `pgcopy` (decisions
as rows and as binary COPY, idempotent insert SQL), `writer` (group commit), `checkpoint`
(SQLite's WAL checkpoints, off the commit path), `writes` (the write
transactions and the partition retry), `partitions` (PostgreSQL monthly partitions and
retention), `queries` (filters and keyset paging), `export` (CSV/Parquet) and `store` (the
`DecisionStore` that ties them together).
"""

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

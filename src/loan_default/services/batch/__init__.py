"""Batch scoring jobs, protocol-neutral: the API routes and the Celery tasks both use this package
and neither imports the other.

One module a job: `records` (record, state, errors, ids), `stores` (the Redis job store),
`codec` (Arrow blobs of chunk inputs and scores, results as JSON items or CSV), `json_input`
(JSON body limits), `csv_input` (CSV parsing and validation, formula escaping), `service`
(submit and read back: the API's side), `scoring` (score one chunk: the worker's side) and
`sweep` (re-send the chunks of a job whose message the broker lost).
"""

from loan_default.services.batch.csv_input import OnError, ParsedFile, parse_csv
from loan_default.services.batch.records import (
    IdempotencyConflict,
    JobRecord,
    JobState,
    JobStatus,
    PayloadTooLarge,
    StoreUnavailable,
    Submitted,
    new_job_id,
    valid_job_id,
)
from loan_default.services.batch.scoring import fail_job, score_chunk
from loan_default.services.batch.service import BatchService, Dispatcher, DriftSink
from loan_default.services.batch.stores import JobStore, RedisJobStore, store_from_settings

__all__ = [
    "BatchService",
    "Dispatcher",
    "DriftSink",
    "IdempotencyConflict",
    "JobRecord",
    "JobState",
    "JobStatus",
    "JobStore",
    "OnError",
    "ParsedFile",
    "PayloadTooLarge",
    "RedisJobStore",
    "StoreUnavailable",
    "Submitted",
    "fail_job",
    "new_job_id",
    "parse_csv",
    "score_chunk",
    "store_from_settings",
    "valid_job_id",
]

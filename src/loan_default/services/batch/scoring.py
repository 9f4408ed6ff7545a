"""The worker's side of a job: score one chunk and store its result, idempotently."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from loguru import logger

from loan_default.features import build_matrix, saving_rate
from loan_default.services import metrics
from loan_default.services.batch import codec
from loan_default.services.batch.records import JobRecord, row_decision_ids
from loan_default.services.batch.stores import Blob, JobStore
from loan_default.services.decisions.batches import DecisionBatch
from loan_default.services.decisions.ids import from_unix_s
from loan_default.services.model import BatchScores

#: Adds the challenger's probabilities to a chunk's decisions (given the chunk's model matrix).
ShadowScorer = Callable[[DecisionBatch, npt.NDArray[np.float32]], DecisionBatch]

if TYPE_CHECKING:  # the recorder's module imports the store, which imports batch (a cycle)
    from loan_default.services.decisions.recorder import DecisionRecorder


def score_chunk(
    *,
    store: JobStore,
    job_id: str,
    index: int,
    predict: Callable[[npt.NDArray[np.float32]], BatchScores],
    worker_id: str | None = None,
    escape_formulas: bool = True,
    decisions: DecisionRecorder | None = None,
    shadow: ShadowScorer | None = None,
    decision_ids: bool = True,
) -> str:
    """Score chunk `index` of `job_id` and store its result; safe to run more than once.

    `worker_id` marks the chunk as begun by this worker (its heartbeat tells the API whether
    the chunk is still being scored). `decisions` records every row before the chunk is marked
    done, with ids derived from the job and the row: a redelivered chunk writes nothing twice,
    and under DECISION_RECORDING=required a store failure leaves the chunk to be retried.
    `shadow` (the challenger's `score_batch`) adds the challenger's probabilities to those
    records, from the same model matrix; it never changes the chunk's result. A JSON job's
    chunk is also rendered as the status page shows it (`codec.encode_rows`), its rows carrying
    their decision ids when `decision_ids` (DECISION_RECORDING is not off), as the API's own
    rendering does. Returns what happened: `scored`, `already-done`, `failed-job` or `expired`.
    """
    # one round trip: a file job's CSV columns are asked for whatever the kind (absent for JSON)
    names = [f"in-{index}", f"ref-{index}", f"x-{index}"]
    marker = None if worker_id is None else f"{time.time()}:{worker_id}"
    begun = store.begin_chunk(job_id, index, names, marker)
    record, blobs = begun.record, begun.blobs
    if record is None:
        return "expired"
    if begun.done:
        return "already-done"
    if blobs[0] is None:
        return "expired"
    raw = codec.decode_raw(blobs[0])
    started = time.perf_counter()
    matrix = build_matrix(raw)
    result = predict(matrix)
    seconds = time.perf_counter() - started
    scores = result.scores
    if decisions is not None and decisions.mode != "off":  # off: no record to build
        references = codec.decode_references(blobs[1]) if blobs[1] is not None else None
        batch = chunk_decisions(record, index, raw, result, reference=references)
        if shadow is not None:
            batch = shadow(batch, matrix)
        decisions.record_chunk(batch)
    reasons = codec.reasons_json(result.reason_codes, result.reason_text, raw.shape[0])
    out: dict[str, Blob] = {f"out-{index}": codec.encode_scores(scores, reasons)}
    if record.kind == "file" and blobs[2] is not None:
        out[f"csv-{index}"] = codec.chunk_csv(
            columns=codec.table_from_ipc(blobs[2]),
            scores=scores,
            header=index == 0,
            escape=escape_formulas,
            reasons=reasons,
        )
    cached: dict[str, Blob] = {}
    if record.kind == "json":
        start = int(record.chunk_starts[index])
        ids = row_decision_ids(record, start, start + raw.shape[0], show=decision_ids)
        cached[f"rows-{index}"] = codec.encode_rows(codec.result_items(raw, scores, reasons, ids))
    event = metrics_event(
        model_version=result.model_version,
        rows=int(raw.shape[0]),
        defaults=int(np.count_nonzero(scores.prediction)),
        seconds=seconds,
    )
    store.put_chunk(
        record, index, out, f"{raw.shape[0]}:{result.model_version}", event, cached=cached
    )
    return "scored"


def chunk_decisions(
    record: JobRecord,
    index: int,
    raw: npt.NDArray[np.float64],
    result: BatchScores,
    *,
    reference: list[str | None] | None,
) -> DecisionBatch:
    """The decision records of chunk `index` as columns: rows numbered within the job, decided
    at the job's submission time (so the ids are the same on every delivery). The inputs are the
    validated float64 values, as a single prediction records them, not the model's float32."""
    start = int(record.chunk_starts[index])
    n = raw.shape[0]
    scores = result.scores
    return DecisionBatch(
        job_id=record.job_id,
        created_at=from_unix_s(record.created_at),
        key_id=record.owner or "unknown",
        model_name=result.model_name,
        model_version=result.model_version,
        model_alias=result.model_alias,
        threshold=result.threshold,
        rows=np.arange(start, start + n, dtype=np.int64),
        employed=raw[:, 0],
        bank_balance=raw[:, 1],
        annual_salary=raw[:, 2],
        saving_rate=saving_rate(raw[:, 1], raw[:, 2]),
        probability=scores.probability,
        prediction=scores.prediction,
        risk_band=scores.default_risk.tolist(),
        reason_codes=list(result.reason_codes) or [()] * n,
        references=reference,
    )


# --- batch rows in the prediction metrics ----------------------------------------------------
# A worker exports no metrics endpoint of its own: each chunk scored the first time queues one
# event in the job store (`put_chunk`), and whichever API process is scraped next takes the
# queued events and counts them in its own prediction metrics. Every row is counted once, by
# one API process, and `/metrics` shows batch traffic next to single predictions.
def metrics_event(*, model_version: str, rows: int, defaults: int, seconds: float) -> str:
    return f"{model_version} {rows} {defaults} {seconds:.6f}"


def record_events(store: JobStore, *, limit: int = 10_000) -> int:
    """Count the queued chunk events in this process's metrics; returns how many were taken."""
    taken = store.take_events(limit)
    for event in taken:
        try:
            version, rows, defaults, seconds = event.split(" ")
            metrics.record_batch(
                model_version=version,
                rows=int(rows),
                defaults=int(defaults),
                seconds=float(seconds),
                ok=True,
            )
        except ValueError:
            logger.warning("malformed batch metrics event {!r} skipped", event[:100])
    return len(taken)


def fail_job(*, store: JobStore, job_id: str, message: str) -> None:
    record = store.record(job_id)
    if record is not None:
        store.set_failed(record, message)

"""Submitting batch jobs and reading them back: what the API routes call.

A job is split into chunks of BATCH_CHUNK_SIZE rows; each chunk's input is stored, then one task
per chunk is published through the `Dispatcher` the caller hands in (the Celery app in
production: this module, like the whole `api` package, never imports the worker).
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from loan_default.core.clock import Clock, utc_iso, utc_now
from loan_default.core.config import Settings
from loan_default.core.errors import NotFound, ServiceUnavailable
from loan_default.features import build_matrix
from loan_default.services.batch import codec
from loan_default.services.batch.csv_input import ParsedFile
from loan_default.services.batch.records import (
    RECENTLY_BEGUN_S,
    IdempotencyConflict,
    JobRecord,
    JobState,
    Submitted,
    new_job_id,
    row_decision_ids,
    valid_job_id,
)
from loan_default.services.batch.stores import Blob, JobStore


class Dispatcher(Protocol):
    """Publishes one scoring task per chunk, and reports on its broker for /readyz."""

    def dispatch(self, job_id: str, n_chunks: int) -> None: ...
    def broker_status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class DriftSink(Protocol):
    def observe_matrix(
        self, matrix: npt.NDArray[np.floating], *, sampling_rate: float | None = None
    ) -> int: ...


class BatchService:
    """Submits jobs (record first, then tasks) and reads their state back."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: JobStore,
        dispatcher: Dispatcher,
        drift: Callable[[], DriftSink | None] | None = None,
        now: Clock = utc_now,
    ) -> None:
        """`now` is when a job is submitted: its `created_at`, which its rows' decision ids and
        `decided_at` carry. The result TTL runs on the wall clock (it is Redis's)."""
        self.settings = settings
        self.now = now
        self.store = store
        self.dispatcher = dispatcher
        self._drift = drift

    # --- submitting ----------------------------------------------------------------------
    def submit_rows(
        self,
        *,
        raw: npt.NDArray[np.float64],
        references: list[str | None] | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        """A JSON job: `raw` (n, 3) float64 in RAW_FEATURES order, already validated, and each
        item's `reference` (validated by the item schema) when any item gave one."""
        raw = np.ascontiguousarray(raw, dtype=np.float64)
        h = hashlib.sha256(b"json\0" + raw.tobytes())
        if references is not None:
            h.update(b"\0refs\0" + "\0".join(r or "" for r in references).encode())
        digest = h.hexdigest()
        return self._submit(
            kind="json",
            raw=raw,
            references=references,
            table=None,
            digest=digest,
            idempotency_key=idempotency_key,
            owner=owner,
        )

    def submit_file(
        self,
        *,
        parsed: ParsedFile,
        digest: str,
        idempotency_key: str | None = None,
        filename: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        return self._submit(
            kind="file",
            raw=parsed.raw,
            references=codec.references_column(parsed.table),
            table=parsed.table,
            digest=digest,
            idempotency_key=idempotency_key,
            skipped=parsed.bad_rows,
            row_errors=parsed.row_errors,
            filename=filename,
            owner=owner,
        )

    def _submit(
        self,
        *,
        kind: Literal["json", "file"],
        raw: npt.NDArray[np.float64],
        references: list[str | None] | None,
        table: Any,
        digest: str,
        idempotency_key: str | None,
        skipped: int = 0,
        row_errors: list[dict[str, Any]] | None = None,
        filename: str | None = None,
        owner: str | None = None,
    ) -> Submitted:
        job_id = new_job_id()
        ttl = self.settings.batch_result_ttl_s
        idem = None
        if idempotency_key is not None:
            idem = hashlib.sha256(idempotency_key.encode()).hexdigest()
            existing = self.store.claim(idem, f"{digest}:{job_id}", ttl)
            if existing is not None:
                old_digest, _, old_job = existing.partition(":")
                if old_digest != digest:
                    raise IdempotencyConflict(
                        "this Idempotency-Key was used with a different request body"
                    )
                rec = self.store.record(old_job)
                return Submitted(
                    job_id=old_job,
                    total=rec.total if rec else int(raw.shape[0]),
                    replayed=True,
                    skipped=rec.skipped if rec else skipped,
                    row_errors=rec.row_errors if rec else (row_errors or []),
                )
        n = int(raw.shape[0])
        size = self.settings.batch_chunk_size
        starts = list(range(0, n, size))
        record = JobRecord(
            job_id=job_id,
            kind=kind,
            total=n,
            chunk_sizes=[min(size, n - s) for s in starts],
            created_at=self.now().timestamp(),
            expires_at=time.time() + ttl,
            skipped=skipped,
            row_errors=row_errors or [],
            filename=filename,
            owner=owner,
        )
        blobs: dict[str, Blob] = {}
        for i, s in enumerate(starts):
            blobs[f"in-{i}"] = codec.encode_raw(raw[s : s + size])
            if table is not None:
                blobs[f"x-{i}"] = codec.table_to_ipc(table.slice(s, size))
            if references is not None:
                blobs[f"ref-{i}"] = codec.encode_references(references[s : s + size])
        try:
            self.store.create(record, blobs)
            try:
                self.dispatcher.dispatch(job_id, record.n_chunks)
            except Exception as exc:
                self.store.delete(job_id)
                raise ServiceUnavailable(
                    "the batch broker is unavailable; retry shortly",
                    detail={"broker": "unreachable"},
                ) from exc
        except ServiceUnavailable:
            if idem is not None:
                with contextlib.suppress(ServiceUnavailable):
                    self.store.release(idem)
            raise
        return Submitted(job_id=job_id, total=n, skipped=skipped, row_errors=record.row_errors)

    def sample_drift(self, raw: npt.NDArray[np.float64]) -> None:
        """Feed a submitted job's rows to the API's PSI window at DRIFT_BATCH_SAMPLING_RATE.

        Not part of `submit_*`: the routes run it once the 202 has been sent, since nothing the
        client is told depends on it (it was ~0.3 ms of a 1000-row submit in the live server,
        where numpy's first calls after an idle gap run on cold caches). A replayed submit is
        not sampled twice: the routes skip it.
        """
        sink = self._drift() if self._drift is not None else None
        if sink is None or self.settings.drift_batch_sampling_rate <= 0:
            return
        sink.observe_matrix(
            build_matrix(raw), sampling_rate=self.settings.drift_batch_sampling_rate
        )

    # --- reading -------------------------------------------------------------------------
    def state(self, job_id: str, *, owner: str | None, prefetch: Sequence[str] = ()) -> JobState:
        """The job if `owner` (the caller's key id) submitted it; any other caller gets the
        same 404 as for an unknown id, so a job id cannot be probed with another key.
        `prefetch`: blobs to read in the same round trip (`JobStore.state`)."""
        state = self.store.state(job_id, prefetch) if valid_job_id(job_id) else None
        if state is None or owner is None or state.record.owner != owner:
            raise NotFound(f"no batch job {job_id!r} (unknown, or its results expired)")
        return state

    def status(
        self, job_id: str, *, owner: str | None, offset: int = 0, limit: int | None = None
    ) -> dict[str, Any]:
        # A JSON job's first page is its first chunk's rendered rows: read with the state, a
        # finished job's page costs one round trip (a poll of an unfinished one, a nil GET)
        state = self.state(job_id, owner=owner, prefetch=("rows-0",) if offset == 0 else ())
        rec = state.record
        status = state.status
        data: dict[str, Any] = {
            "job_id": rec.job_id,
            "status": status,
            "progress": state.progress,
            "total": rec.total,
            "completed": state.completed,
            "model_version": state.model_version,
            "created_at": utc_iso(rec.created_at),
            "expires_at": utc_iso(rec.expires_at),
        }
        if rec.kind == "file":
            data["skipped"] = rec.skipped
            data["row_errors"] = rec.row_errors
        if status == "FAILURE":
            data["error"] = state.failure
        elif status != "SUCCESS" and (waiting := self._awaiting_redelivery(state)):
            data["awaiting_redelivery"] = waiting
        if status == "SUCCESS":
            limit = self.settings.batch_page_max_rows if limit is None else limit
            end = max(offset, min(rec.total, offset + limit))
            data["offset"] = offset
            data["limit"] = limit
            data["results"] = orjson.Fragment(b"[" + self.results_json(state, offset, end) + b"]")
            data["next_offset"] = end if end < rec.total else None
        return data

    def results_json(self, state: JobState, start: int, stop: int) -> bytes:
        """Rows start..stop-1 as the inside of the page's `results` array.

        A JSON job's rows come from the text its worker rendered (`rows-<i>`) while that is
        kept; otherwise (a file job, or later) they are rendered here from the chunk's input and
        scores by the same functions, into the same bytes.
        """
        rec = state.record
        if start >= stop:
            return b""
        starts = rec.chunk_starts
        first = int(np.searchsorted(starts, start, side="right") - 1)
        last = int(np.searchsorted(starts, stop - 1, side="right") - 1)
        names: list[str] = []
        for i in range(first, last + 1):
            if f"rows-{i}" not in state.prefetched:
                names += [f"rows-{i}", f"in-{i}", f"out-{i}"]
        # one round trip (none when the state brought every chunk's rows), whichever is there
        found: dict[str, bytes | None] = dict(state.prefetched)
        if names:
            found.update(zip(names, self.store.blobs(rec.job_id, names), strict=True))
        show_ids = self.settings.decision_recording != "off"
        pieces: list[bytes] = []
        for i in range(first, last + 1):
            rows_b, raw_b, out_b = (found.get(f"{kind}-{i}") for kind in ("rows", "in", "out"))
            lo = max(start, int(starts[i])) - int(starts[i])
            hi = min(stop, int(starts[i + 1])) - int(starts[i])
            if rows_b is not None:
                pieces.append(codec.decode_rows(rows_b).join(lo, hi))
                continue
            if raw_b is None or out_b is None:
                raise NotFound(f"the results of batch job {rec.job_id!r} expired")
            scores, reasons = codec.decode_results(out_b)
            # each row's decision record, under the id the worker derived from the job and row
            ids = row_decision_ids(rec, int(starts[i]) + lo, int(starts[i]) + hi, show=show_ids)
            items = codec.result_items(
                codec.decode_raw(raw_b)[lo:hi], scores.slice(lo, hi), reasons.slice(lo, hi), ids
            )
            pieces.append(codec.items_json(items))
        return b",".join(pieces)

    def _awaiting_redelivery(self, state: JobState) -> dict[str, Any] | None:
        """Chunks begun by a worker that has stopped beating (SIGKILLed, host lost).

        Redis hands such a chunk to another worker only once CELERY_VISIBILITY_TIMEOUT_S has
        passed since it was delivered.
        """
        cutoff = time.time() - RECENTLY_BEGUN_S  # the markers are the workers' wall clock
        begun = [(ts, w) for ts, w in state.begun().values() if ts < cutoff]
        if not begun:
            return None
        alive = self.store.alive(sorted({w for _, w in begun}))
        lost = [ts for ts, w in begun if w not in alive]
        if not lost:
            return None
        return {
            "chunks": len(lost),
            "expected_at": utc_iso(max(lost) + self.settings.celery_visibility_timeout_s),
            "reason": "the worker scoring these chunks stopped; the broker redelivers them "
            "once CELERY_VISIBILITY_TIMEOUT_S has passed",
        }

    def csv_chunks(self, job_id: str, *, owner: str | None) -> Iterator[bytes]:
        """results.csv of a finished job, one chunk at a time (the caller streams it)."""
        state = self.state(job_id, owner=owner)
        if state.status != "SUCCESS":
            raise NotFound(
                f"batch job {job_id} has no results yet (status {state.status})",
                detail={"status": state.status},
            )
        return self._iter_csv(state.record)

    def _iter_csv(self, rec: JobRecord) -> Iterator[bytes]:
        for i in range(rec.n_chunks):
            if rec.kind == "file":
                (data,) = self.store.blobs(rec.job_id, [f"csv-{i}"])
                if data is None:
                    return
                yield data
            else:
                raw_b, out_b = self.store.blobs(rec.job_id, [f"in-{i}", f"out-{i}"])
                if raw_b is None or out_b is None:
                    return
                scores, reasons = codec.decode_results(out_b)
                yield codec.chunk_csv(
                    columns=codec.raw_table(codec.decode_raw(raw_b)),
                    scores=scores,
                    header=i == 0,
                    reasons=reasons,
                )

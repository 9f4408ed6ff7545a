"""Batch scoring routes (`/api/v1/predict/batch...`): parse, call `services.batch`, answer.

Jobs are scored by Celery workers; these handlers only validate, store the job and publish its
chunk tasks (202), then read the job store back. Blocking I/O (Redis, file parsing) runs in the
threadpool so the event loop keeps serving single predictions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from loguru import logger
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from loan_default.api.deps import require_json, require_scope
from loan_default.api.schemas import Envelope, ErrorEnvelope, JSONBytes
from loan_default.api.v1 import batch_body, batch_docs
from loan_default.core.clock import Clock, utc_now
from loan_default.core.config import Settings
from loan_default.core.errors import InvalidInput, ServiceUnavailable
from loan_default.core.keys import SCORE
from loan_default.services import batch as batch_service
from loan_default.services.batch import scoring as batch_scoring

#: Submitting and reading jobs is scoring: keys need the `score` scope (core/keys.py).
router = APIRouter(
    prefix="/predict/batch", tags=["batch"], dependencies=[Depends(require_scope(SCORE))]
)

#: Request-body limits of this router's routes that differ from MAX_BODY_BYTES: path within the
#: router -> the setting that bounds it. `create_app` hands them to the request middleware.
BODY_LIMITS: dict[str, str] = {"/file": "max_upload_bytes"}


def body_limits(settings: Settings, *, prefix: str) -> dict[str, int]:
    """BODY_LIMITS as full paths and byte counts, for the request middleware."""
    return {
        f"{prefix}{router.prefix}{path}": getattr(settings, n) for path, n in BODY_LIMITS.items()
    }


@dataclass(slots=True)
class BatchState:
    """What `create_app` puts on `app.state.batch`: the service, or None when no broker is set."""

    settings: Settings
    service: batch_service.BatchService | None
    dispatcher: batch_service.Dispatcher | None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        dispatcher: batch_service.Dispatcher | None,
        drift: Callable[[], batch_service.DriftSink | None],
        now: Clock = utc_now,
    ) -> BatchState:
        """No I/O: the Redis client connects on first use."""
        store = batch_service.store_from_settings(settings)
        service = None
        if store is not None and dispatcher is not None:
            service = batch_service.BatchService(
                settings=settings, store=store, dispatcher=dispatcher, drift=drift, now=now
            )
        return cls(settings=settings, service=service, dispatcher=dispatcher)

    def broker_status(self) -> dict[str, Any]:
        """For /readyz; never raises."""
        if self.service is None or self.dispatcher is None:
            return {"type": "none", "status": "not_configured"}
        return self.dispatcher.broker_status()

    def collect_metrics(self) -> None:
        """Count the chunks workers scored since the last scrape (never raises)."""
        if self.service is None:
            return
        try:
            batch_scoring.record_events(self.service.store)
        except batch_service.StoreUnavailable:
            logger.warning("batch metrics not collected: the job store is unavailable")

    def close(self) -> None:
        if self.service is not None:
            self.service.store.close()
        if self.dispatcher is not None:
            self.dispatcher.close()


async def _batch_service(request: Request) -> batch_service.BatchService:
    service: batch_service.BatchService | None = request.app.state.batch.service
    if service is None:
        raise ServiceUnavailable(
            "batch scoring is not configured on this server (CELERY_BROKER_URL is empty); "
            "`loan-default run` starts a broker for local use",
            detail={"broker": "not_configured"},
        )
    return service


BatchServiceDep = Annotated[batch_service.BatchService, Depends(_batch_service)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Same key and body within BATCH_RESULT_TTL_S returns the same job.",
    ),
]


def _accepted(
    sub: batch_service.Submitted,
    *,
    kind: str,
    service: batch_service.BatchService,
    raw: npt.NDArray[np.float64],
) -> Response:
    """The 202; a new job's rows reach the drift window after it is sent (`sample_drift`)."""
    data = batch_docs.BatchSubmitted(
        job_id=sub.job_id,
        status="PENDING",
        message=(
            "same Idempotency-Key and body: this is the job already submitted"
            if sub.replayed
            else f"{kind} job queued; poll /api/v1/predict/batch/{sub.job_id}"
        ),
        total_predictions=sub.total,
        skipped=sub.skipped if kind == "file" else None,
        row_errors=sub.row_errors if kind == "file" else None,
    ).model_dump(exclude_none=True)
    return JSONBytes(
        {"success": True, "data": data, "message": data["message"]},
        status_code=202,
        headers={
            "Location": f"/api/v1/predict/batch/{sub.job_id}",
            **({"Idempotent-Replayed": "true"} if sub.replayed else {}),
        },
        background=None if sub.replayed else BackgroundTask(service.sample_drift, raw),
    )


@router.post(
    "",
    status_code=202,
    dependencies=[Depends(require_json)],
    response_model=Envelope[batch_docs.BatchSubmitted],
    openapi_extra=batch_docs.SUBMIT_OPENAPI,
    responses={**batch_docs.SUBMITTED, **batch_docs.ERRORS},
    summary="Queue up to BATCH_MAX_ROWS applicants for scoring",
)
async def submit_batch(
    request: Request, service: BatchServiceDep, idempotency_key: IdempotencyKey = None
) -> Response:
    body = await request.body()
    settings = service.settings
    if len(body) <= batch_body.INLINE_VALIDATION_BYTES:
        raw, references = batch_body.validated_rows(settings, body)
    else:  # only an oversized or hostile body is this large: never parse it on the event loop
        raw, references = await run_in_threadpool(batch_body.validated_rows, settings, body)
    sub = await run_in_threadpool(
        service.submit_rows,
        raw=raw,
        references=references,
        idempotency_key=_scoped(request, idempotency_key),
        owner=_owner(request),
    )
    return _accepted(sub, kind="JSON", service=service, raw=raw)


def _owner(request: Request) -> str:
    """The caller's key id (set by `authorize`, which guards every route of this router)."""
    key_id: str = request.state.key_id
    return key_id


def _scoped(request: Request, idempotency_key: str | None) -> str | None:
    """Idempotency keys are per API key: two clients choosing the same key get separate jobs."""
    if idempotency_key is None:
        return None
    return f"{_owner(request)}:{idempotency_key}"


def _parse_upload(
    service: batch_service.BatchService,
    upload: UploadFile,
    on_error: batch_service.OnError,
    idempotency_key: str | None,
    owner: str,
) -> tuple[batch_service.Submitted, npt.NDArray[np.float64]]:
    """The upload parsed and submitted; also returns its rows, for `sample_drift`."""
    settings = service.settings
    fh = upload.file
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(0)
    if size > settings.max_upload_bytes:
        raise batch_service.PayloadTooLarge(
            f"the file is larger than {settings.max_upload_bytes} bytes",
            detail={"max_upload_bytes": settings.max_upload_bytes},
        )
    if size == 0:
        raise InvalidInput("the uploaded file is empty")
    digest = hashlib.sha256(f"file\0{on_error}\0".encode())
    while block := fh.read(1 << 20):
        digest.update(block)
    fh.seek(0)
    parsed = batch_service.parse_csv(
        fh,
        max_rows=settings.batch_file_max_rows,
        on_error=on_error,
        max_columns=settings.batch_csv_max_columns,
        max_header_bytes=settings.batch_csv_max_header_bytes,
        max_errors=settings.batch_max_reported_errors,
    )
    sub = service.submit_file(
        parsed=parsed,
        digest=digest.hexdigest(),
        idempotency_key=idempotency_key,
        filename=Path(upload.filename).name if upload.filename else None,
        owner=owner,
    )
    return sub, parsed.raw


@router.post(
    "/file",
    status_code=202,
    response_model=Envelope[batch_docs.BatchSubmitted],
    openapi_extra=batch_docs.FILE_OPENAPI,
    responses={
        **batch_docs.SUBMITTED,
        **batch_docs.ERRORS,
        400: {"model": ErrorEnvelope, "description": "malformed multipart body"},
    },
    summary="Queue a portfolio CSV (up to BATCH_FILE_MAX_ROWS rows) for scoring",
)
async def submit_file(
    request: Request,
    service: BatchServiceDep,
    on_error: Annotated[
        Literal["reject", "skip"],
        Query(description="reject: any bad row refuses the file; skip: score the valid rows."),
    ] = "reject",
    idempotency_key: IdempotencyKey = None,
) -> Response:
    form = await request.form(max_files=1, max_fields=16)  # malformed multipart: 400
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise RequestValidationError(
                [
                    {
                        "type": "missing",
                        "loc": ("body", "file"),
                        "msg": "Field required: a file part named `file`",
                        "input": None,
                    }
                ]
            )
        sub, raw = await run_in_threadpool(
            _parse_upload,
            service,
            file,
            on_error,
            _scoped(request, idempotency_key),
            _owner(request),
        )
    finally:
        await form.close()
    return _accepted(sub, kind="file", service=service, raw=raw)


@router.get(
    "/{job_id}",
    operation_id="get_batch_job",
    responses=batch_docs.ERRORS,
    summary="Job status, progress and (on SUCCESS) a page of results in input order",
)
async def job_status(
    request: Request,
    job_id: str,
    service: BatchServiceDep,
    offset: Annotated[int, Query(ge=0, description="First result row (0-based).")] = 0,
    limit: Annotated[
        int | None, Query(ge=1, description="Rows per page (default and max BATCH_PAGE_MAX_ROWS).")
    ] = None,
) -> Response:
    page_max = service.settings.batch_page_max_rows
    if limit is not None and limit > page_max:
        raise InvalidInput(
            f"limit must be at most {page_max}",
            detail=[
                {
                    "type": "less_than_equal",
                    "loc": ["query", "limit"],
                    "msg": f"Input should be less than or equal to {page_max}",
                }
            ],
        )
    data = await run_in_threadpool(
        service.status, job_id, owner=_owner(request), offset=offset, limit=limit
    )
    if data["status"] == "SUCCESS":
        data["results_csv"] = str(
            request.app.url_path_for("get_batch_job_results_csv", job_id=job_id)
        )
    return JSONBytes({"success": True, "data": data, "message": f"job {data['status']}"})


@router.get(
    "/{job_id}/results.csv",
    operation_id="get_batch_job_results_csv",
    name="get_batch_job_results_csv",
    responses={**batch_docs.ERRORS, 200: {"content": {"text/csv": {}}}},
    response_class=StreamingResponse,
    summary="All results of a finished job as CSV (streamed; extra input columns included)",
)
async def job_results_csv(request: Request, job_id: str, service: BatchServiceDep) -> Response:
    chunks: Iterator[bytes] = await run_in_threadpool(
        service.csv_chunks, job_id, owner=_owner(request)
    )
    return StreamingResponse(
        chunks,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.csv"'},
    )

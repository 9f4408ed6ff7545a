"""The OpenAPI side of the batch routes: request/response models and the schemas of bodies the
handlers parse themselves (so the document still describes them for clients and the fuzzer)."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from loan_default.api.schemas import ErrorEnvelope, PredictionRequest
from loan_default.services import batch as batch_service

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 413, 415, 422, 429, 503)
}
#: OpenAPI links from a submit's 202 to what a client does next with the job id: documented for
#: client generators, and followed by the stateful contract fuzzing (schemathesis).
JOB_ID = {"job_id": "$response.body#/data/job_id"}
SUBMITTED: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted: the job is queued; poll its status with the job id.",
        "links": {
            "GetJobStatus": {"operationId": "get_batch_job", "parameters": JOB_ID},
            "GetJobResultsCsv": {"operationId": "get_batch_job_results_csv", "parameters": JOB_ID},
        },
    }
}


class BatchPredictionRequest(BaseModel):
    """1 to BATCH_MAX_ROWS applicants, each validated exactly like the single predict.

    The body of `POST /api/v1/predict/batch` (parsed from bytes by the handler). Unknown
    fields are refused here too, at the top level as in each item.
    """

    model_config = ConfigDict(extra="forbid")

    predictions: list[PredictionRequest] = Field(min_length=1)


@functools.lru_cache(maxsize=4)
def bounded_request(limit: int) -> type[BatchPredictionRequest]:
    """BatchPredictionRequest refusing more than `limit` (BATCH_MAX_ROWS) items: pydantic stops
    at the limit with one `too_long` error rather than validating every item."""
    model: type[BatchPredictionRequest] = create_model(
        "BatchPredictionRequest",
        __base__=BatchPredictionRequest,
        predictions=(list[PredictionRequest], Field(min_length=1, max_length=limit)),
    )
    return model


class BatchSubmitted(BaseModel):
    job_id: str
    status: batch_service.JobStatus
    message: str
    total_predictions: int
    skipped: int | None = None
    row_errors: list[dict[str, Any]] | None = None


#: The handler parses the body itself, so its schema is given to OpenAPI here (inlined: the
#: document has no component for it, and `$defs` refs would not resolve from the document root).
SUBMIT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "BatchPredictionRequest",
                    "type": "object",
                    "required": ["predictions"],
                    "additionalProperties": False,
                    "properties": {
                        "predictions": {
                            "type": "array",
                            "minItems": 1,
                            "description": "1 to BATCH_MAX_ROWS applicants.",
                            "items": PredictionRequest.model_json_schema(),
                        }
                    },
                }
            }
        },
    }
}


#: The upload route reads its multipart body itself, *after* the router's auth dependency:
#: with a `File(...)` parameter FastAPI would spool the whole upload (up to MAX_UPLOAD_BYTES)
#: before the key is checked, for any anonymous client. The schema is given to OpenAPI here.
FILE_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "title": "BatchFileUpload",
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV with columns `Employed, Bank Balance, Annual "
                            "Salary` (or employed, bank_balance, annual_salary); other columns "
                            "are carried to the output.",
                        }
                    },
                }
            }
        },
    }
}

"""Loguru set-up shared by the API, the worker and the CLI; safe to call more than once.

Development gets human-readable lines; `ENVIRONMENT=production` gets one JSON object per line.
The API middleware writes one access line per request (`AccessLog`) carrying the request id and
the model version that answered; error lines name the request id in their message.
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message

from loan_default.core.config import Settings

_configured: tuple[str, bool] | None = None


class _InterceptHandler(logging.Handler):
    """Route stdlib logging (uvicorn, celery, mlflow) into loguru so there is one format."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = logging.currentframe()
        depth = 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


def _json_sink(message: Message) -> None:
    """One compact JSON object per line, via orjson.

    loguru's own `serialize=True` dumps the whole record with the stdlib json module (~200 us a
    line measured here, as much as the rest of a prediction request); this costs a few us.
    """
    record = message.record
    line: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        "function": record["function"],
        "line": record["line"],
    }
    if record["extra"]:
        line.update(record["extra"])
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        line["exception"] = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    sys.stderr.write(orjson.dumps(line, default=str).decode() + "\n")


def configure_logging(settings: Settings, *, intercept_stdlib: bool = True) -> None:
    configure_sinks(
        settings.log_level, json_logs=settings.json_logs, intercept_stdlib=intercept_stdlib
    )


def configure_sinks(level: str, *, json_logs: bool, intercept_stdlib: bool = True) -> None:
    """`configure_logging` from the two values it reads (a child process gets no `Settings`)."""
    global _configured
    key = (level.upper(), json_logs)
    if _configured == key:
        return
    logger.remove()
    if json_logs:
        logger.add(_json_sink, level=key[0], format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=key[0],
            backtrace=False,
            diagnose=False,
            format="<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
            "<cyan>{name}</cyan> {message} <dim>{extra}</dim>",
        )
    if intercept_stdlib:
        # The configured level, not 0: uvicorn wraps the app in its per-ASGI-message trace logger
        # whenever its logger is enabled for TRACE, which cost ~15 % of a predict request.
        level = logging.getLevelName(key[0])
        logging.basicConfig(
            handlers=[_InterceptHandler()],
            level=level if isinstance(level, int) else logging.INFO,
            force=True,
        )
        for noisy in ("alembic", "mlflow", "urllib3", "git", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    _configured = key


def printable(text: str) -> str:
    """`text` with control characters backslash-escaped (CR, LF, ESC...), so a request path cannot
    split a log line or drive a terminal. One `isprintable()` for the usual path."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


class AccessLog:
    """The one line per request. In production it is written straight to stderr as JSON (the same
    keys as `_json_sink`), skipping loguru's record building and frame inspection: ~55 us of a
    ~700 us request measured through loguru, a few us this way. Development keeps loguru's format.
    Only the event-loop thread writes access lines, so they never interleave with each other.
    """

    __slots__ = ("enabled", "json")

    def __init__(self, settings: Settings) -> None:
        level = logging.getLevelName(settings.log_level.upper())
        self.enabled = not isinstance(level, int) or level <= logging.INFO
        self.json = settings.json_logs

    def __call__(
        self,
        *,
        request_id: str,
        method: str,
        path: str,
        route: str,
        status: int,
        latency_ms: float,
        model_version: str | None,
    ) -> None:
        if not self.enabled:
            return
        path = printable(path)
        message = f"{method} {path} {status} {latency_ms}ms"
        fields = {
            "request_id": request_id,
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "latency_ms": latency_ms,
            "model_version": model_version,
        }
        if self.json:
            line = {
                "time": datetime.now(UTC).isoformat(),
                "level": "INFO",
                "message": message,
                "logger": "loan_default.api.access",
                **fields,
            }
            sys.stderr.write(orjson.dumps(line).decode() + "\n")
        else:
            # bound fields, no format arguments: loguru formats a message only when it is given
            # args or kwargs, so request data is never read as a format string (issue 11 #5:
            # `{status:>30000000}` in a path wrote a 30 MB line, `{nope}` raised KeyError)
            logger.bind(**fields).info(message)

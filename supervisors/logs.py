"""Structured JSON log lines on stdout (journald keeps them), secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable

from otgate.config.secrets import RedactingFilter


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, message, pid."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": message.split(" ", 1)[0],
            "message": message,
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str | None = None, secrets: Iterable[str] = ()) -> RedactingFilter:
    """Route every otgate logger to stdout as JSON; returns the redaction filter."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level or os.environ.get("OTGATE_LOG_LEVEL", "INFO"))
    for noisy in ("aiokafka", "asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor

"""Log lines for humans (``PUSH_LOG_FORMAT=text``, the default) or one JSON object a line (``json``).

JSON lines carry the ids that follow one notification through the pipeline:
``command_id`` (every API write or send; a send's command id is its
``message_id``), ``message_id`` (on the workers' chunk lines and delivery
outcomes), ``delivery_id`` (its device token redacted: no log line holds a whole
token, :func:`redacted_token`), plus the queue and actor. The API logs each
enqueue (shared/metrics.py), the workers log each processed message
(:class:`MessageLog`) and each delivery's outcome (DEBUG for ``sent``, INFO for
the others).
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

#: Attributes every LogRecord has; anything else on a record is an ``extra`` field and goes into the JSON.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}

log = logging.getLogger("push")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, process, the record's extra fields, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(log_format: str) -> None:
    """Switch the process's log lines to JSON when ``log_format`` is ``json``; ``text`` leaves them as they are."""
    if (log_format or "text").lower() != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
        root.setLevel(logging.INFO)
    formatter = JsonFormatter()
    for handler in root.handlers:
        handler.setFormatter(formatter)


#: Characters of a device token a log line keeps (the rest is replaced): enough to tell tokens apart, not to use one.
TOKEN_SHOWN = 6


def redacted_token(token: str) -> str:
    """A device token as log lines show it: its first characters and its length, never the whole token."""
    return f"{token[:TOKEN_SHOWN]}…({len(token)})"


def redacted_delivery_id(delivery_id: str) -> str:
    """A delivery id (``<message>:<entry>:<token>``) with its token redacted, for log lines."""
    parts = delivery_id.split(":", 2)
    return ":".join([*parts[:2], redacted_token(parts[2])]) if len(parts) == 3 else redacted_token(delivery_id)


def ids_of(args: tuple) -> dict:
    """The pipeline ids found in an actor's first argument (a command or a delivery chunk)."""
    payload = args[0] if args and isinstance(args[0], dict) else {}
    ids = {}
    if "id" in payload:
        ids["command_id"] = payload["id"]
    if "message_id" in payload:
        ids["message_id"] = payload["message_id"]
    if "kind" in payload:
        ids["kind"] = payload["kind"]
    if "deliveries" in payload:
        ids["deliveries"] = len(payload["deliveries"])
    return ids


def message_log_middleware():
    """A Dramatiq middleware logging one line per processed message, with its pipeline ids and duration."""
    from dramatiq import Middleware

    class MessageLog(Middleware):
        def __init__(self):
            self.started: dict[str, float] = {}

        def before_process_message(self, broker, message):
            self.started[message.message_id] = time.perf_counter()

        def after_process_message(self, broker, message, *, result=None, exception=None):
            started = self.started.pop(message.message_id, None)
            fields = {
                "queue": message.queue_name,
                "actor": message.actor_name,
                "dramatiq_message_id": message.message_id,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
                **ids_of(message.args),
            }
            if exception is None:
                log.info("processed %s", message.actor_name, extra=fields)
            else:
                log.warning("failed %s: %s", message.actor_name, exception, extra=fields)

        def after_skip_message(self, broker, message):
            self.started.pop(message.message_id, None)

    return MessageLog()

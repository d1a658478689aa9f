"""Logging setup: console text or JSON lines on stderr, one level for the whole agent."""

from __future__ import annotations

import json
import logging
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and error when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = str(record.exc_info[1])
        return json.dumps(entry)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup(level: str = "info", encoding: str = "console", stream=None) -> None:
    """Configure the root logger once; later calls replace the handler."""
    handler = logging.StreamHandler(stream) if stream else _StderrHandler()
    if encoding == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # The SDK exporters log every retry; keep them at warning unless debugging.
    if LEVELS[level] > logging.DEBUG:
        logging.getLogger("opentelemetry").setLevel(logging.WARNING)


class RateLimited:
    """Lets a message through at most once per `period_s` per key (export failures ...)."""

    def __init__(self, period_s: float = 60.0, clock=time.monotonic) -> None:
        self._period_s, self._clock, self._last = period_s, clock, {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._period_s:
            return False
        self._last[key] = now
        return True

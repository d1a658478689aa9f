"""Log setup: console or JSON lines, levels, and the rate limiter."""

import io
import json
import logging

import pytest

from otel_netreceiver import logs


@pytest.fixture(autouse=True)
def restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines():
    out = io.StringIO()
    logs.setup("info", "json", out)
    logging.getLogger("x.y").info("hello %s", "world")
    logging.getLogger("x.y").debug("hidden")
    [line] = out.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["msg"]) == ("info", "x.y", "hello world")


@pytest.mark.parametrize("level, shown", [("debug", 3), ("info", 2), ("warn", 1), ("error", 0)])
def test_levels(level, shown):
    out = io.StringIO()
    logs.setup(level, "console", out)
    log = logging.getLogger("t")
    log.debug("d"), log.info("i"), log.warning("w")
    assert len(out.getvalue().splitlines()) == shown


def test_rate_limited():
    now = [0.0]
    limiter = logs.RateLimited(60, clock=lambda: now[0])
    assert limiter.allow("a") and not limiter.allow("a") and limiter.allow("b")
    now[0] = 61
    assert limiter.allow("a")

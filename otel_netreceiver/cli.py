"""The `otel-netreceiver` command: run, check, validate, --version.

User errors print one line and exit 2 (bad flags, configuration, environment); a probe
that cannot load or an endpoint that cannot be opened prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from otel_netreceiver import __version__, agent, config, logs, preflight
from otel_netreceiver.probes import ProbeError

PROG = "otel-netreceiver"
log = logging.getLogger(__name__)


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str):
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog=PROG, description="eBPF network metrics for OpenTelemetry.")
    top.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = top.add_subparsers(dest="command", metavar="{run,check,validate}",
                                  parser_class=_Parser)
    run = commands.add_parser("run", help="run the agent until SIGTERM or SIGINT")
    run.add_argument("--config", metavar="FILE", help="YAML configuration (default: built-in defaults)")
    commands.add_parser("check", help="check that this machine can run the agent")
    validate = commands.add_parser("validate", help="validate a configuration file and exit")
    validate.add_argument("--config", metavar="FILE", required=True)
    return top


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command is None:
            raise UsageError("a command is required: run, check or validate (see --help)")
        return COMMANDS[args.command](args)
    except (UsageError, config.ConfigError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except (ProbeError, OSError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(args) -> int:
    settings = config.load(args.config)
    logs.setup(settings.log_level, settings.log_encoding)
    if settings.sdk_disabled:
        print(f"{PROG}: OTEL_SDK_DISABLED=true: telemetry is disabled, not loading probes")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if not settings.exporters:
        log.warning("no exporter configured (OTEL_METRICS_EXPORTER=none): collecting without exporting")
    instance = agent.build(settings)
    names = ", ".join(e.name for e in settings.exporters) or "none"

    def ready() -> None:
        agent.settle_memory()
        log.info("%s %s running; exporters: %s; interval %gs",
                 PROG, __version__, names, settings.collection_interval_s)

    instance.run(stop, ready=ready)
    log.info("stopped after a final export")
    return 0


def check(args) -> int:
    results = preflight.run_checks()
    for result in results:
        print(result.line())
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def validate(args) -> int:
    settings = config.load(args.config)
    exporters = ", ".join(f"{e.name} ({e.endpoint})" if e.endpoint else e.name
                          for e in settings.exporters) or "none"
    print(f"{args.config}: valid; interval {settings.collection_interval_s:g}s; "
          f"{len(settings.enabled_metrics)} metrics enabled; exporters: {exporters}")
    return 0


COMMANDS = {"run": run, "check": check, "validate": validate}

if __name__ == "__main__":
    sys.exit(main())

"""The command line: parse arguments, build the settings once, pick a mode.

Exit statuses (also in the README):
    0   success (``run`` stopped cleanly; ``check``: all healthy)
    1-3 ``check`` only, as a monitoring plugin (see ``supervisor.check``)
    2   also: bad command-line usage (argparse)
    69  a needed optional part is not installed (the simulator extra)
    71  ``run``: the health and metrics listener could not bind its address
    78  invalid configuration (one line per problem on stderr; EX_CONFIG), including a
        state file that cannot be used
    130 a second Ctrl-C forced ``run`` to exit at once

Modules are imported inside the mode that needs them, so that ``check`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.settings import Settings

EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_CONFIG = 78
PROG = "wasend-supervisor"


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override the environment and the config file)")
    group.add_argument("--config", type=Path, metavar="PATH",
                       help="TOML configuration file (env: WASEND_SUPERVISOR_CONFIG)")
    group.add_argument("--base-url", dest="base_url", metavar="URL")
    group.add_argument("--session", "--sessions", dest="sessions", action="append", metavar="ID",
                       help="supervise this session id (repeatable; default: every session)")
    group.add_argument("--poll-interval", dest="poll_interval", type=float, metavar="SECONDS")
    group.add_argument("--request-timeout", dest="request_timeout", type=float,
                       metavar="SECONDS")
    group.add_argument("--rate-limit", dest="rate_limit", type=float, metavar="PER_SECOND")
    group.add_argument("--log-format", dest="log_format", choices=("auto", "json", "console"))
    group.add_argument("--log-level", dest="log_level",
                       choices=("debug", "info", "warning", "error", "critical"))
    group.add_argument("--state-path", dest="state_path", metavar="PATH",
                       help="the state file, or :memory: (env: WASEND_SUPERVISOR_STATE_PATH)")


def _state_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the state is")
    group.add_argument("--config", type=Path, metavar="PATH",
                       help="TOML configuration file (env: WASEND_SUPERVISOR_CONFIG)")
    group.add_argument("--state-path", dest="state_path", metavar="PATH",
                       help="the state file (env: WASEND_SUPERVISOR_STATE_PATH)")


_OVERRIDES = ("base_url", "sessions", "poll_interval", "request_timeout", "rate_limit",
              "log_format", "log_level", "http_listen", "state_path")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keeps WASend WhatsApp sessions alive: restarts stopped or failed ones.",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    run = sub.add_parser("run", help="the daemon: poll and restart until stopped")
    _settings_flags(run)
    run.add_argument("--http-listen", dest="http_listen", metavar="HOST:PORT",
                     help="serve /livez, /readyz and /metrics here (conventional port 9187)")

    check = sub.add_parser("check", help="one pass, a report and a monitoring exit status")
    _settings_flags(check)
    check.add_argument("--dry-run", action="store_true", help="restart nothing; say what would be")
    check.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait up to this long for restarted sessions to come back")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    config = sub.add_parser("config", help="validate and print the effective configuration")
    _settings_flags(config)

    status = sub.add_parser(
        "status", help="every supervised session, from the state file (no API call, no key)")
    _state_flags(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")

    history = sub.add_parser("history", help="the restart history, from the state file")
    _state_flags(history)
    history.add_argument("--session", dest="history_sessions", action="append", metavar="ID",
                         help="only this session (repeatable)")
    history.add_argument("--since", metavar="WHEN",
                         help="an ISO time (2025-01-31T08:00Z) or a duration ago (30m, 2h, 7d)")
    history.add_argument("--limit", type=int, default=200, metavar="N",
                         help="the last N rows (default 200; 0: all)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # The simulator's own command line parses the rest (supervisor.simulator.cli, imported
    # only when this mode runs): no prefix character here, so that every flag is passed on.
    simulate = sub.add_parser("simulate", help="run the built-in WASend API simulator",
                              add_help=False, prefix_chars="\0")
    simulate.add_argument("simulator_args", nargs=argparse.REMAINDER)

    demo = sub.add_parser("demo", help="the supervisor against the built-in simulator")
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="end by itself after this long (default: until Ctrl-C)")
    demo.add_argument("--log-format", dest="log_format", choices=("auto", "json", "console"),
                      default="console")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None}


def load(args: argparse.Namespace, *, require_api_key: bool) -> Settings | int:
    """Settings from every source, or EX_CONFIG after one line per problem on stderr."""
    from supervisor.settings import ConfigError, load_settings

    try:
        return load_settings(cli=_overrides(args), config_path=args.config,
                             require_api_key=require_api_key)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{PROG}: configuration error: {problem}", file=sys.stderr)
        return EX_CONFIG


def _run(args: argparse.Namespace) -> int:
    settings = load(args, require_api_key=True)
    if isinstance(settings, int):
        return settings
    from supervisor import logs

    logs.configure(settings.log_format, settings.log_level, sys.stdout)
    return asyncio.run(_run_async(settings, lambda: _reload(args)))


def _reload(args: argparse.Namespace) -> Settings:
    """SIGHUP: the settings again, from the same flags, config path and (re-read) sources."""
    from supervisor.settings import load_settings

    return load_settings(cli=_overrides(args), config_path=args.config, require_api_key=True)


def _configure_logs(settings: Settings) -> None:
    from supervisor import logs

    logs.configure(settings.log_format, settings.log_level, sys.stdout)


def _state_error(settings: Settings, exc: Exception) -> int:
    """A state file that cannot be used: one line naming it and where it was set."""
    where = settings.source_of("state_path", long=True)
    print(f"{PROG}: state error: state_path: {exc} ({where})", file=sys.stderr)
    return EX_CONFIG


async def _run_async(settings: Settings, reload: Callable[[], Settings]) -> int:
    import structlog

    from supervisor.service import ListenError, Service
    from supervisor.store import StateError

    try:
        service = Service.build(settings, env=os.environ, load=reload,
                                configure_logs=_configure_logs)
    except StateError as exc:
        return _state_error(settings, exc)
    _started()
    try:
        try:
            await service.open()
        except ListenError as exc:
            structlog.get_logger("supervisor.listener").error("http.listen_failed",
                                                              problem=str(exc))
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EX_OSERR
        return await service.run()
    finally:
        await service.aclose()


def _check(args: argparse.Namespace) -> int:
    settings = load(args, require_api_key=True)
    if isinstance(settings, int):
        return settings
    from supervisor import logs

    # stdout carries the report; the events go to stderr.
    logs.configure(settings.log_format, settings.log_level, sys.stderr)
    return asyncio.run(_check_async(settings, args))


async def _check_async(settings: Settings, args: argparse.Namespace) -> int:
    from supervisor.check import run_check
    from supervisor.store import StateError
    from supervisor.wiring import build

    try:
        runtime = build(settings)
    except StateError as exc:
        return _state_error(settings, exc)
    runtime.supervisor.poll_interval = None  # no poll backoff: --wait polls every second
    _started()
    try:
        report = await run_check(runtime.supervisor, dry_run=args.dry_run, wait=args.wait)
    finally:
        await runtime.aclose()
    report.write(sys.stdout, as_json=args.json)
    return report.exit_status


def _config(args: argparse.Namespace) -> int:
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    from supervisor.settings import render_settings

    sys.stdout.write(render_settings(settings))
    return 0


def _missing_extra(what: str, exc: ImportError) -> int:
    print(f"{PROG}: {what} needs the 'simulator' extra "
          f"(pip install 'wasend-supervisor[simulator]'): {exc}", file=sys.stderr)
    return EX_UNAVAILABLE


def _open_state(args: argparse.Namespace) -> tuple[Settings, Any] | int:
    """The settings and the state file opened read-only, or an exit status."""
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    from supervisor.sqlite_store import MEMORY, SqliteStore
    from supervisor.store import StateError

    location = settings.state_location()
    if location == MEMORY:
        print(f"{PROG}: state_path is {MEMORY}: no state is kept between runs", file=sys.stderr)
        return EX_CONFIG
    try:
        return settings, SqliteStore.open_readonly(location)
    except FileNotFoundError:
        print(f"{PROG}: no state file at {location} yet (run or check creates it)",
              file=sys.stderr)
        return 0
    except StateError as exc:
        return _state_error(settings, exc)


def _status(args: argparse.Namespace) -> int:
    opened = _open_state(args)
    if isinstance(opened, int):
        return opened
    settings, store = opened
    import time

    from supervisor.state_report import render_status, status_report

    now = time.time()
    try:
        sessions = status_report(store, settings.policy().classes, now)
    finally:
        store.close()
    print(render_status(sessions, now, as_json=args.json, location=store.location))
    return 0


def _history(args: argparse.Namespace) -> int:
    import time

    from supervisor.state_report import parse_since, render_history

    try:
        since = None if args.since is None else parse_since(args.since, time.time())
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.limit < 0:
        print(f"{PROG}: --limit: must be 0 (all) or more", file=sys.stderr)
        return 2
    opened = _open_state(args)
    if isinstance(opened, int):
        return opened
    _settings, store = opened
    try:
        entries = store.read_history(session_ids=args.history_sessions or (), since=since,
                                     limit=args.limit or None)
    finally:
        store.close()
    print(render_history(entries, as_json=args.json, location=store.location))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    try:
        from supervisor.simulator.cli import main as simulator_main
    except ImportError as exc:
        return _missing_extra("the simulator", exc)
    _started()
    return simulator_main(args.simulator_args, prog=f"{PROG} simulate")  # usage error: exits 2


def _demo(args: argparse.Namespace) -> int:
    try:
        from supervisor.demo import run_demo
    except ImportError as exc:
        return _missing_extra("the demo", exc)
    _started()
    return run_demo(duration=args.duration, log_format=args.log_format)


MODES = {
    "run": _run,
    "check": _check,
    "config": _config,
    "status": _status,
    "history": _history,
    "simulate": _simulate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return MODES[args.mode](args)


def _started() -> None:
    """Start-up is over (modules imported, settings read, client built): the cyclic
    garbage collector runs again, and what start-up built is frozen so that it skips it.

    ``entry`` turns the collector off while the process starts, when it would only walk
    the objects of the imports over and over (about 25 ms of a 0.35 s ``check``; see
    docs/benchmarks.md). Called directly (tests), ``main`` leaves the collector alone.
    """
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def entry() -> None:  # pragma: no cover - the console script
    gc.disable()  # until _started()
    status = main()
    # The process ends here: spare the interpreter its last collections over every
    # object of pydantic, httpx and the rest (about 50 ms of a 0.35 s ``check``).
    # Objects are still released as the interpreter shuts down.
    gc.freeze()
    sys.exit(status)

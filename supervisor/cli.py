"""The command line: parse arguments, build the settings once, pick a mode.

Exit statuses (also in the README):
    0   success (``run`` stopped cleanly; ``check``: all healthy)
    1-3 ``check`` only, as a monitoring plugin (see ``supervisor.check``)
    2   also: bad command-line usage (argparse)
    69  a needed optional part is not installed (the simulator extra)
    78  invalid configuration (one line per problem on stderr; EX_CONFIG)
    130 a second Ctrl-C forced ``run`` to exit at once

Modules are imported inside the mode that needs them, so that ``check`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.settings import Settings

EX_UNAVAILABLE = 69
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


_OVERRIDES = ("base_url", "sessions", "poll_interval", "request_timeout", "rate_limit",
              "log_format", "log_level")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keeps WASend WhatsApp sessions alive: restarts stopped or failed ones.",
    )
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    run = sub.add_parser("run", help="the daemon: poll and restart until stopped")
    _settings_flags(run)

    check = sub.add_parser("check", help="one pass, a report and a monitoring exit status")
    _settings_flags(check)
    check.add_argument("--dry-run", action="store_true", help="restart nothing; say what would be")
    check.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait up to this long for restarted sessions to come back")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    config = sub.add_parser("config", help="validate and print the effective configuration")
    _settings_flags(config)

    simulate = sub.add_parser("simulate", help="run the built-in WASend API simulator")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    simulate.add_argument("--sessions", type=int, default=5, help="how many sessions to create")
    simulate.add_argument("--api-key", default=None, help="the key it accepts (default: random)")
    simulate.add_argument("--scenario", type=Path, default=None, metavar="FILE",
                          help="a TOML or JSON scenario (see config/scenario.example.toml)")

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
    return asyncio.run(_run_async(settings))


async def _run_async(settings: Settings) -> int:
    from supervisor.daemon import Daemon
    from supervisor.wiring import build

    runtime = build(settings)
    _started()
    try:
        daemon = Daemon(
            runtime.supervisor,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.shutdown_grace,
            poll_jitter=settings.poll_jitter,
        )
        return await daemon.run()
    finally:
        await runtime.aclose()


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
    from supervisor.wiring import build

    runtime = build(settings)
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


def _simulate(args: argparse.Namespace) -> int:
    try:
        from supervisor.simulator import ScenarioError, serve
    except ImportError as exc:
        print(f"{PROG}: the simulator needs the 'simulator' extra "
              f"(pip install 'wasend-supervisor[simulator]'): {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    _started()
    try:
        return serve(args.host, args.port, args.sessions, args.api_key, args.scenario,
                     sys.stdout)
    except ScenarioError as exc:
        print(f"{PROG}: scenario error: {exc}", file=sys.stderr)
        return EX_CONFIG


def _demo(args: argparse.Namespace) -> int:
    try:
        from supervisor.demo import run_demo
    except ImportError as exc:
        print(f"{PROG}: the demo needs the 'simulator' extra "
              f"(pip install 'wasend-supervisor[simulator]'): {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    _started()
    return run_demo(duration=args.duration, log_format=args.log_format)


MODES = {
    "run": _run,
    "check": _check,
    "config": _config,
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

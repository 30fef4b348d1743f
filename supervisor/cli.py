"""The command line: parse arguments, build the settings once, pick a mode.

Exit statuses (also in the README, and in ``--help``: the epilogs below):
    0   success (``run`` stopped cleanly; ``check``: all healthy)
    1-3 ``check`` only, as a monitoring plugin (see ``supervisor.runtime.check``); for ``check``,
        a usage error and an invalid configuration are 3 (UNKNOWN) too
    2   bad command-line usage (argparse), except for ``check``
    1, 3 ``alerts test``: a channel did not take the test message (1); no alerts configured (3)
    1   ``hash-token``: the token cannot be one (empty, too short), or the entries differ
    69  a needed optional part is not installed (the simulator extra; for ``run`` and
        ``alerts test``, the alerts extra when Apprise URLs are configured; for ``run``,
        the web extra when ``http_auth_file`` is set)
    71  ``run``: the health and metrics listener could not bind its address
    78  invalid configuration (one line per problem on stderr; EX_CONFIG), including a
        state file that cannot be used; not for ``check``
    130 a second Ctrl-C forced ``run`` to exit at once

Modules are imported inside the mode that needs them, so that ``check`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from supervisor import __version__
from supervisor.domain import events as ev

if TYPE_CHECKING:
    from supervisor.config.model import Settings
    from supervisor.domain.secrets import Secrets

EX_USAGE = 2  # argparse's
EX_NO_ALERTS = 3  # alerts test: nothing to test
EX_UNAVAILABLE = 69
EX_OSERR = 71
EX_CONFIG = 78
PROG = "wasend-supervisor"
# ``check`` on a terminal or with --quiet: the log level when none is set anywhere.
CHECK_QUIET_LOG_LEVEL = "warning"

EXITS = """exit statuses:
  0    success (run: stopped cleanly; check: every session healthy)
  1-3  check: WARNING, CRITICAL, UNKNOWN (see check --help)
  1    alerts test: a channel did not take the test message
  1    hash-token: the token is empty or too short, or the two entries differ
  2    a command-line usage error (check: 3)
  3    alerts test: no alerts configured
  69   simulate, demo: the 'simulator' extra is not installed; run, alerts test:
       Apprise URLs are configured and the 'alerts' extra is not installed; run:
       http_auth_file is set and the 'web' extra is not installed
  71   run: the http_listen address could not be bound
  78   invalid configuration, or a state file that cannot be used (check: 3)
  130  run: a second Ctrl-C forced an immediate exit"""

CHECK_EXITS = """exit statuses (a monitoring plugin's; the first line of the report says which):
  0  OK: every session is healthy
  1  WARNING: something was restarted, is recovering or waiting for its next attempt,
     has an unknown status, or (--dry-run) would be restarted
  2  CRITICAL: a restart failed, or a session was given up on, is gone or needs a person
  3  UNKNOWN: the API could not be asked, the state file could not be used, the
     command line or the configuration is invalid, or Apprise URLs are configured and
     the 'alerts' extra is not installed (unless --no-alerts)

The report goes to stdout, the log events to stderr. On a terminal and with --quiet,
only warnings and worse are logged unless a log level is set (flag, environment or
config file)."""

RUN_EXITS = """exit statuses:
  0    stopped cleanly (SIGTERM, SIGINT)
  2    a command-line usage error
  69   Apprise URLs are configured and the 'alerts' extra is not installed, or
       http_auth_file is set and the 'web' extra is not installed
  71   the http_listen address could not be bound (systemd may retry)
  78   invalid configuration, or a state file that cannot be used (EX_CONFIG: systemd's
       RestartPreventExitStatus)
  130  a second Ctrl-C forced an immediate exit"""

ALERTS_TEST_EXITS = """exit statuses:
  0   every channel took the test message
  1   at least one did not (one line per channel says which, and why)
  2   a command-line usage error
  3   no alerts configured (no alerts.urls, alerts.urls_file or alerts.alertmanager_url)
  69  Apprise URLs are configured and the 'alerts' extra is not installed
  78  invalid configuration: one line per problem on stderr (EX_CONFIG)"""

ALERTS_LIST_EXITS = """exit statuses:
  0   listed (none open is a list too); or no state file yet
  2   a command-line usage error
  78  invalid configuration, or a state file that cannot be used"""

HASHING_EXITS = """The token is read from stdin when it is not a terminal (e.g.
  openssl rand -base64 24 | tee token | wasend-supervisor hash-token),
else asked for twice without echo. The hash goes on a line of http_auth_file as NAME:HASH.

exit statuses:
  0   printed the hash
  1   the token is empty, too short, or holds a space; or the two entries differ
  2   a command-line usage error"""

HOLD_EXITS = """exit statuses:
  0   done (also when it was paused already, for pause, or not paused, for resume)
  1   the session is not in the state file (or there is none yet); nothing changed
  2   a command-line usage error
  78  invalid configuration, or a state file that cannot be used"""

CONFIG_EXITS = """exit statuses:
  0   the configuration is valid (printed)
  2   a command-line usage error
  78  invalid configuration: one line per problem on stderr (EX_CONFIG)"""


class UsageError(Exception):
    """A command line argparse refused; ``parser`` is the (sub)parser that refused it."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised for ``main`` to answer, so that
    ``check`` can answer it as a monitoring plugin (3, UNKNOWN) and the others with 2."""

    modes: Mapping[str, argparse.ArgumentParser]  # the top-level parser's subparsers

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


class _SettingsHelp(argparse.RawDescriptionHelpFormatter):
    """Help for the settings flags: each with its meaning, default and environment
    variable, read from the settings model (imported only when help is printed)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest not in _OVERRIDES:
            return action.help
        from supervisor.config.model import Settings
        from supervisor.config.sources import default_state_path, env_var_names

        field = Settings.model_fields[action.dest]
        default: Any = field.default
        if action.dest == "state_path":
            default = default_state_path(os.environ)[0]
        shown = ", ".join(default) if isinstance(default, tuple) else str(default)
        env = " or ".join(env_var_names(action.dest))
        text = field.description if action.help == _FROM_SETTINGS else action.help
        return f"{text} (default: {shown or 'none'}; env {env})".replace("%", "%%")


def _seconds(text: str, *, zero: bool) -> float:
    """A flag's finite number of seconds: 0 or more (``zero``), else more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        more = "0 or more" if zero else "more than 0"
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, {more}")
    return value


def _wait_seconds(text: str) -> float:
    """``--wait``: a finite number of seconds, 0 or more."""
    return _seconds(text, zero=True)


def _positive_seconds(text: str) -> float:
    """``--stale-after``: a finite number of seconds, more than 0."""
    return _seconds(text, zero=False)


# The help of a settings flag that has none of its own: the setting's description.
_FROM_SETTINGS = "(the setting's description)"


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (override the environment and the config file)")
    group.add_argument("--config", type=Path, metavar="PATH",
                       help="TOML configuration file (env: WASEND_SUPERVISOR_CONFIG)")
    group.add_argument("--base-url", dest="base_url", metavar="URL", help=_FROM_SETTINGS)
    group.add_argument("--session", "--sessions", dest="sessions", action="append", metavar="ID",
                       help="supervise this session id, repeatable; none: every session")
    # Values are handed to the settings as typed, to be checked there: one rule for every
    # source, and a rejected value is shown by the settings' excerpt rule, which never
    # echoes a value that looks like a key (argparse's type= and choices= would).
    group.add_argument("--poll-interval", dest="poll_interval", metavar="SECONDS",
                       help=_FROM_SETTINGS)
    group.add_argument("--request-timeout", dest="request_timeout", metavar="SECONDS",
                       help=_FROM_SETTINGS)
    group.add_argument("--rate-limit", dest="rate_limit", metavar="PER_SECOND",
                       help=_FROM_SETTINGS)
    group.add_argument("--log-format", dest="log_format", metavar="{auto,json,console}",
                       help=_FROM_SETTINGS)
    group.add_argument("--log-level", dest="log_level",
                       metavar="{debug,info,warning,error,critical}", help=_FROM_SETTINGS)
    group.add_argument("--state-path", dest="state_path", metavar="PATH",
                       help="the state file, or :memory:")


def _state_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("where the state is")
    group.add_argument("--config", type=Path, metavar="PATH",
                       help="TOML configuration file (env: WASEND_SUPERVISOR_CONFIG)")
    group.add_argument("--state-path", dest="state_path", metavar="PATH",
                       help="the state file (env: WASEND_SUPERVISOR_STATE_PATH)")


_OVERRIDES = ("base_url", "sessions", "poll_interval", "request_timeout", "rate_limit",
              "log_format", "log_level", "http_listen", "state_path")


def build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Keeps WASend WhatsApp sessions alive: restarts stopped or failed ones.",
        epilog=EXITS + "\n\nNO_COLOR (set to anything) turns the console log's colours off.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    parser.modes = sub.choices

    run = sub.add_parser("run", help="the daemon: poll and restart until stopped",
                         epilog=RUN_EXITS, formatter_class=_SettingsHelp)
    _settings_flags(run)
    run.add_argument("--http-listen", dest="http_listen", metavar="HOST:PORT",
                     help="serve /livez, /readyz and /metrics here (conventionally port 9187)")

    check = sub.add_parser("check", help="one pass, a report and a monitoring exit status",
                           epilog=CHECK_EXITS, formatter_class=_SettingsHelp)
    _settings_flags(check)
    check.add_argument("--dry-run", action="store_true",
                       help="restart nothing; say what would be (from the API's answer)")
    check.add_argument("--wait", type=_wait_seconds, default=0.0, metavar="SECONDS",
                       help="wait up to this long for restarted sessions to come back "
                            "(default: %(default)g)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    check.add_argument("--quiet", action="store_true",
                       help="print nothing when every session is OK, and only the sessions "
                            "that are not otherwise (for cron)")
    check.add_argument("--no-alerts", dest="no_alerts", action="store_true",
                       help="send no alerts, even when alerts are configured")

    config = sub.add_parser("config", help="validate and print the effective configuration",
                            epilog=CONFIG_EXITS, formatter_class=_SettingsHelp)
    _settings_flags(config)

    status = sub.add_parser(
        "status", help="every supervised session, from the state file (no API call, no key)")
    _state_flags(status)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.add_argument("--stale-after", dest="stale_after", type=_positive_seconds,
                        metavar="SECONDS",
                        help="exit 3 when no process has polled successfully for this long"
                        " (default: 10 minutes, or 3 x poll_interval if longer)")

    retry = sub.add_parser(
        "retry", help="retry a given-up session at the next poll (clears its give-up)")
    _state_flags(retry)
    retry.add_argument("retry_session", metavar="ID", help="the session to retry")

    for mode, what in (("pause", "pause supervision of a session: every poll leaves it alone"),
                       ("resume", "resume supervision of a paused session")):
        holding = sub.add_parser(mode, help=f"{what} (the state file; no API call, no key)",
                                 epilog=HOLD_EXITS,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        _state_flags(holding)
        holding.add_argument("hold_session", metavar="ID", help="the session")
        holding.add_argument("--by", dest="hold_by", metavar="NAME",
                             help="who does it, for the event and status (default: the OS"
                                  " user)")

    history = sub.add_parser("history", help="the restart history, from the state file")
    _state_flags(history)
    history.add_argument("--session", dest="history_sessions", action="append", metavar="ID",
                         help="only this session (repeatable)")
    history.add_argument("--since", metavar="WHEN",
                         help="an ISO time (2025-01-31T08:00Z) or a duration ago (30m, 2h, 7d)")
    history.add_argument("--limit", type=int, default=200, metavar="N",
                         help="the last N rows (default 200; 0: all)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")

    alerts = sub.add_parser("alerts", help="the alert channels: send a test message, list "
                                           "the open episodes")
    commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    alerts_test = commands.add_parser(
        "test", help="send a test message to every configured channel and say how each went",
        epilog=ALERTS_TEST_EXITS, formatter_class=argparse.RawDescriptionHelpFormatter)
    alerts_test.add_argument("--config", type=Path, metavar="PATH",
                             help="TOML configuration file (env: WASEND_SUPERVISOR_CONFIG)")
    alerts_list = commands.add_parser(
        "list", help="the open alert episodes, from the state file (no API call, no key)",
        epilog=ALERTS_LIST_EXITS, formatter_class=argparse.RawDescriptionHelpFormatter)
    _state_flags(alerts_list)
    alerts_list.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sub.add_parser("hash-token", help="hash a token for a line of http_auth_file "
                                      "(NAME:scrypt$...)",
                   epilog=HASHING_EXITS, formatter_class=argparse.RawDescriptionHelpFormatter)

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


def _settings(args: argparse.Namespace, *, require_api_key: bool) -> Settings | list[str]:
    """Settings from every source, or the problems found (one line each)."""
    from supervisor.config.load import load_settings
    from supervisor.config.problems import ConfigError

    try:
        return load_settings(cli=_overrides(args), config_path=args.config,
                             require_api_key=require_api_key)
    except ConfigError as exc:
        return exc.problems


def _config_problems(problems: list[str]) -> None:
    for problem in problems:
        print(f"{PROG}: configuration error: {problem}", file=sys.stderr)


def load(args: argparse.Namespace, *, require_api_key: bool) -> Settings | int:
    """Settings from every source, or EX_CONFIG after one line per problem on stderr."""
    settings = _settings(args, require_api_key=require_api_key)
    if isinstance(settings, list):
        _config_problems(settings)
        return EX_CONFIG
    return settings


def _run(args: argparse.Namespace) -> int:
    settings = load(args, require_api_key=True)
    if isinstance(settings, int):
        return settings
    from supervisor.service import web_missing

    missing = apprise_missing(settings) or web_missing(settings)
    if missing is not None:
        print(f"{PROG}: {missing}", file=sys.stderr)
        return EX_UNAVAILABLE
    from supervisor import logs
    from supervisor.domain.secrets import Secrets

    # The process's: redacted from its log lines and the API's errors (the key, added by
    # the client, the alert URLs, the webhooks' key, the status page's tokens).
    secrets = Secrets(settings.secret_values())
    logs.configure(settings.log_format, settings.log_level, sys.stdout, secrets=secrets)
    return asyncio.run(_run_async(settings, lambda: _reload(args), secrets))


def _reload(args: argparse.Namespace) -> Settings:
    """SIGHUP: the settings again, from the same flags, config path and (re-read) sources."""
    from supervisor.config.load import load_settings

    return load_settings(cli=_overrides(args), config_path=args.config, require_api_key=True)


def _configure_logs(settings: Settings, secrets: Secrets) -> None:
    from supervisor import logs

    logs.configure(settings.log_format, settings.log_level, sys.stdout, secrets=secrets)


def _state_key(settings: Settings) -> str:
    """The setting that names where the state is: state_url(_file) or state_path."""
    if settings.state_dsn() is None:
        return "state_path"
    return "state_url_file" if settings.state_url_file is not None else "state_url"


def _state_where(settings: Settings) -> str:
    """Where the state is, as it may be shown: the database (never its password), or
    the file."""
    dsn = settings.state_dsn()
    if dsn is None:
        return settings.state_location()
    from supervisor.state.store import describe_dsn

    return describe_dsn(dsn.get_secret_value())


def _state_problem(settings: Settings, exc: Exception) -> str:
    """A state that cannot be used, in one line naming it and where it was set."""
    key = _state_key(settings)
    return f"state error: {key}: {exc} ({settings.source_of(key, long=True)})"


def _state_error(settings: Settings, exc: Exception) -> int:
    print(f"{PROG}: {_state_problem(settings, exc)}", file=sys.stderr)
    return EX_CONFIG


async def _run_async(
    settings: Settings, reload: Callable[[], Settings], secrets: Secrets
) -> int:
    import structlog

    from supervisor.service import ListenError, PageError, Service
    from supervisor.state.store import StateError

    try:
        service = Service.build(settings, env=os.environ, load=reload,
                                configure_logs=lambda new: _configure_logs(new, secrets),
                                secrets=secrets)
    except StateError as exc:
        return _state_error(settings, exc)
    except PageError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    _started()
    try:
        try:
            await service.open()
        except ListenError as exc:
            structlog.get_logger("supervisor.listener").error(ev.HTTP_LISTEN_FAILED,
                                                              problem=str(exc))
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EX_OSERR
        return await service.run()
    finally:
        await service.aclose()


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args, require_api_key=True)
    if isinstance(settings, list):
        _config_problems(settings)
        more = f" (and {len(settings) - 1} more)" if len(settings) > 1 else ""
        return _check_unknown(f"configuration error: {settings[0]}{more}", as_json=args.json)
    missing = apprise_missing(settings) if _check_alerts(settings, args) else None
    if missing is not None:
        print(f"{PROG}: {missing}", file=sys.stderr)
        return _check_unknown(missing, as_json=args.json)
    from supervisor import logs
    from supervisor.domain.secrets import Secrets

    # stdout carries the report; the events go to stderr.
    level = check_log_level(settings, quiet=args.quiet, tty=sys.stderr.isatty())
    # The process's: redacted from its log lines and the API's errors (the key, added by
    # the client, and the alert URLs).
    secrets = Secrets(settings.secret_values())
    logs.configure(settings.log_format, level, sys.stderr, secrets=secrets)
    return asyncio.run(_check_async(settings, args, secrets))


def _check_alerts(settings: Settings, args: argparse.Namespace) -> bool:
    """Whether this ``check`` alerts: alerts configured, and neither --no-alerts nor
    --dry-run."""
    return settings.alerts.enabled and not args.no_alerts and not args.dry_run


def check_log_level(settings: Settings, *, quiet: bool, tty: bool) -> str:
    """``check``'s log level: the one set (by flag, environment or config file), else
    warning when a person reads the report (a terminal) or cron mails it (``--quiet``),
    else the default (info: a timer's journal keeps every restart)."""
    if settings.source_of("log_level") == "default" and (quiet or tty):
        return CHECK_QUIET_LOG_LEVEL
    return settings.log_level


def _check_unknown(problem: str, *, as_json: bool) -> int:
    """``check`` could not start: UNKNOWN, as a monitoring plugin says it, on stdout."""
    from supervisor.domain.verdict import UNKNOWN
    from supervisor.runtime.check import Report

    Report(UNKNOWN, error=problem).write(sys.stdout, as_json=as_json)
    return UNKNOWN


async def _check_async(settings: Settings, args: argparse.Namespace, secrets: Secrets) -> int:
    from supervisor.runtime.check import run_check
    from supervisor.runtime.wiring import build
    from supervisor.state.store import StateError

    try:
        # No poll backoff (--wait polls every second); a longer Retry-After pause than
        # --wait is reported, not waited out.
        runtime = build(settings, check=True, max_wait=args.wait, secrets=secrets)
    except StateError as exc:
        problem = _state_problem(settings, exc)
        print(f"{PROG}: {problem}", file=sys.stderr)
        return _check_unknown(problem, as_json=args.json)
    alerts = None
    if _check_alerts(settings, args):
        # Imported here: a check without alerts loads none of it (nor Apprise).
        from supervisor.alert_wiring import Alerts

        alerts = Alerts.build(settings, runtime.store, runtime.clock, secrets, check=True)
    _started()
    try:
        report = await run_check(runtime.supervisor, dry_run=args.dry_run, wait=args.wait,
                                 after_poll=None if alerts is None else alerts.after_poll)
        if alerts is not None:  # what this pass queued, sent now (a daemon on the file sends)
            await alerts.send_queued(runtime.clock.now())
    finally:
        if alerts is not None:
            await alerts.aclose()
        await runtime.aclose()
    report.write(sys.stdout, as_json=args.json, quiet=args.quiet)
    return report.exit_status


def _config(args: argparse.Namespace) -> int:
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    from supervisor.config.render import render_settings

    sys.stdout.write(render_settings(settings))
    return 0


def _missing_extra(what: str, exc: ImportError) -> int:
    print(f"{PROG}: {what} needs the 'simulator' extra "
          f"(pip install 'wasend-supervisor[simulator]'): {exc}", file=sys.stderr)
    return EX_UNAVAILABLE


def apprise_missing(settings: Settings) -> str | None:
    """The problem, in one line naming the setting and its source, when Apprise URLs are
    configured and Apprise (the 'alerts' extra) is not installed; else None. Looked up
    without importing it."""
    alerts = settings.alerts
    if not alerts.channel_urls():
        return None
    import importlib.util

    if importlib.util.find_spec("apprise") is not None:
        return None
    key = "alerts.urls" if alerts.urls else "alerts.urls_file"
    return (f"{key}: Apprise URLs need the 'alerts' extra (pip install "
            f"'wasend-supervisor[alerts]'), and Apprise is not installed "
            f"({settings.source_of(key, long=True)})")


def _open_state(args: argparse.Namespace, *, unknown: int | None = None,
                ) -> tuple[Settings, Any] | int:
    """The settings and the state file opened read-only, or an exit status. ``unknown``
    (``status``, a monitoring status) is returned for a missing or unusable file."""
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    from supervisor.state.store import MEMORY, StateError

    dsn = settings.state_dsn()
    if dsn is None and settings.state_location() == MEMORY:
        print(f"{PROG}: state_path is {MEMORY}: no state is kept between runs", file=sys.stderr)
        return EX_CONFIG
    try:
        if dsn is not None:
            from supervisor.state.postgres import PostgresStore

            return settings, PostgresStore.open_readonly(
                dsn.get_secret_value(), prepare=settings.state_prepared_statements)
        from supervisor.state.sqlite import SqliteStore

        return settings, SqliteStore.open_readonly(settings.state_location())
    except FileNotFoundError:
        where = f"in {_state_where(settings)}" if dsn is not None else (
            f"file at {settings.state_location()}")
        print(f"{PROG}: no state {where} yet (run or check creates it)", file=sys.stderr)
        return 0 if unknown is None else unknown
    except StateError as exc:
        status = _state_error(settings, exc)
        return status if unknown is None else unknown


def _status(args: argparse.Namespace) -> int:
    """Exits like ``check`` (0, 1, 2), or 3 when the file is stale, never polled, missing
    or unusable (see ``supervisor.state.report``)."""
    from supervisor.domain.verdict import UNKNOWN

    opened = _open_state(args, unknown=UNKNOWN)
    if isinstance(opened, int):
        return opened
    settings, store = opened
    import time

    from supervisor.state.report import default_stale_after, render_status, status_report

    now = time.time()
    stale_after = args.stale_after or default_stale_after(settings.poll_interval)
    try:
        report = status_report(store, settings.policy().classes, now, stale_after)
    finally:
        store.close()
    print(render_status(report, now, as_json=args.json, location=store.location))
    return int(report["exit_status"])


def _retry(args: argparse.Namespace) -> int:
    """Clear one session's give-up in the state file, so that the next poll (of a daemon
    or a check) restarts it as a first attempt. 0 done; 1 nothing changed (no such
    session on record, not given up, or a retry in flight); 78 the file cannot be used."""
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    from supervisor import logs
    from supervisor.clock import SystemClock
    from supervisor.domain import core, history
    from supervisor.runtime.cycle import emit
    from supervisor.runtime.wiring import open_store
    from supervisor.state.store import MEMORY, StateError

    logs.configure(settings.log_format, settings.log_level, sys.stderr)  # stdout: the answer
    location = _state_where(settings)
    session_id = args.retry_session
    in_file = settings.state_dsn() is None
    if in_file and location == MEMORY:
        print(f"{PROG}: state_path is {MEMORY}: no state to change", file=sys.stderr)
        return EX_CONFIG
    if in_file and not Path(location).exists():
        print(f"{PROG}: no state file at {location} yet; nothing to retry", file=sys.stderr)
        return 1
    clock = SystemClock()
    try:
        store = open_store(settings, clock)
    except StateError as exc:
        return _state_error(settings, exc)
    try:
        with store.transaction():  # read and written under the write lock: compare-and-set
            record = store.get(session_id)
            if record is None:
                print(f"{PROG}: no session {session_id!r} in {location}", file=sys.stderr)
                return 1
            now = clock.now()
            try:
                step = core.retry_now(record, now)
            except ValueError as exc:
                print(f"{PROG}: {exc}; nothing changed", file=sys.stderr)
                return 1
            store.swap(record, step.record)
            store.add_history(history.entries(step.events, now))
    except StateError as exc:
        return _state_error(settings, exc)
    finally:
        store.close()
    for event in step.events:
        emit(event)
    print(f"session {session_id}: given up no more; the next poll restarts it as a first"
          " attempt")
    return 0


def _hold(args: argparse.Namespace) -> int:
    """``pause ID`` and ``resume ID``: put a session on hold in the state file, or take
    it off (``supervisor.runtime.operator``); a running daemon sees it at its next poll.
    0 done (or nothing to do); 1 no such session on record; 78 the file cannot be used."""
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    import getpass

    from supervisor import logs
    from supervisor.clock import SystemClock
    from supervisor.printable import printable
    from supervisor.runtime import operator
    from supervisor.runtime.wiring import open_store
    from supervisor.state.report import iso
    from supervisor.state.store import MEMORY, StateError

    logs.configure(settings.log_format, settings.log_level, sys.stderr)  # stdout: the answer
    location = _state_where(settings)
    in_file = settings.state_dsn() is None
    session_id, pausing = args.hold_session, args.mode == "pause"
    if args.hold_by is not None:
        by = args.hold_by.strip()
        if not by:
            print(f"{PROG}: --by: a name is needed", file=sys.stderr)
            return EX_USAGE
    else:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):  # a container's user with no name
            by = f"uid {os.getuid()}"
    if in_file and location == MEMORY:
        print(f"{PROG}: state_path is {MEMORY}: no state to change", file=sys.stderr)
        return EX_CONFIG
    if in_file and not Path(location).exists():
        print(f"{PROG}: no state file at {location} yet; no session {session_id!r} in it",
              file=sys.stderr)
        return 1
    clock = SystemClock()
    try:
        store = open_store(settings, clock)
    except StateError as exc:
        return _state_error(settings, exc)
    try:
        if pausing:
            made, new = operator.hold(store, session_id, by, clock.now())
        else:
            was = operator.release(store, session_id)
    except operator.Refused:
        print(printable(f"{PROG}: no session {session_id!r} in {location}; nothing changed"),
              file=sys.stderr)
        return 1
    except StateError as exc:
        return _state_error(settings, exc)
    finally:
        store.close()
    if pausing and new:
        operator.log_paused(made)
        answer = (f"session {session_id}: paused by {made.by}; no process restarts or stops"
                  f" it until 'resume {session_id}'")
    elif pausing:
        answer = (f"session {session_id}: paused already, by {made.by} since {iso(made.at)};"
                  " nothing changed")
    elif was is not None:
        operator.log_resumed(session_id, by, was)
        answer = f"session {session_id}: resumed; the next poll supervises it as usual"
    else:
        answer = f"session {session_id}: not paused; nothing changed"
    print(printable(answer))
    return 0


def _history(args: argparse.Namespace) -> int:
    import time

    from supervisor.state.report import parse_since, render_history

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


def _alerts(args: argparse.Namespace) -> int:
    return _alerts_test(args) if args.alerts_command == "test" else _alerts_list(args)


def _alerts_test(args: argparse.Namespace) -> int:
    """Send a test message to every channel: one line per channel on stdout, 0 only if
    every one took it."""
    settings = load(args, require_api_key=False)
    if isinstance(settings, int):
        return settings
    if not settings.alerts.enabled:
        print(f"{PROG}: no alerts configured (set alerts.urls, alerts.urls_file or "
              "alerts.alertmanager_url)", file=sys.stderr)
        return EX_NO_ALERTS
    missing = apprise_missing(settings)
    if missing is not None:
        print(f"{PROG}: {missing}", file=sys.stderr)
        return EX_UNAVAILABLE
    from supervisor import logs
    from supervisor.domain.secrets import Secrets

    secrets = Secrets(settings.secret_values())  # never in a log line or a result
    logs.configure(settings.log_format, settings.log_level, sys.stderr, secrets=secrets)
    _started()
    return asyncio.run(_alerts_test_async(settings, secrets))


async def _alerts_test_async(settings: Settings, secrets: Secrets) -> int:
    import socket
    import time

    import httpx

    from supervisor.alerts import build

    alerts = settings.alerts
    http = (None if alerts.alertmanager_url is None
            else httpx.AsyncClient(trust_env=False, timeout=settings.request_timeout))
    try:
        channels = build.channels(alerts, http=http)
        message = build.probe_message(socket.gethostname(), time.time())
        results = await build.send_test(channels, message, timeout=settings.request_timeout)
    finally:
        if http is not None:
            await http.aclose()
    names = build.describe(alerts)
    for channel_id, problem in results:
        outcome = "delivered" if problem is None else f"failed: {secrets.redact(problem)}"
        print(f"{channel_id} ({names.get(channel_id, '?')}): {outcome}")
    return 0 if all(problem is None for _, problem in results) else 1


def _alerts_list(args: argparse.Namespace) -> int:
    """The open alert episodes in the state file (as ``history``: read-only, no key)."""
    opened = _open_state(args)
    if isinstance(opened, int):
        return opened
    _settings, store = opened
    import time

    from supervisor.alerts.listing import render_episodes

    try:
        episodes = store.open_episodes()
    finally:
        store.close()
    print(render_episodes(episodes, time.time(), as_json=args.json, location=store.location))
    return 0


def _hash_token(args: argparse.Namespace) -> int:
    """Print the scrypt hash of a token read from stdin, or asked for twice on a terminal."""
    from supervisor.web.auth import hash_token

    if sys.stdin.isatty():
        import getpass

        token = getpass.getpass("Token: ")
        if getpass.getpass("Again: ") != token:
            print(f"{PROG}: hash-token: the two entries differ", file=sys.stderr)
            return 1
    else:
        token = sys.stdin.read(64 * 1024).strip()
    try:
        print(hash_token(token))
    except ValueError as exc:
        print(f"{PROG}: hash-token: {exc}", file=sys.stderr)
        return 1
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
    "retry": _retry,
    "pause": _hold,
    "resume": _hold,
    "history": _history,
    "alerts": _alerts,
    "hash-token": _hash_token,
    "simulate": _simulate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _usage_error(parser, exc, argv)
    return MODES[args.mode](args)


def _usage_error(parser: _Parser, exc: UsageError, argv: list[str]) -> int:
    """argparse's usage line and message on stderr (the mode's usage, also for arguments
    it did not know); for ``check``, also its UNKNOWN verdict (or JSON object, if
    ``--json`` is among the arguments) on stdout, and 3."""
    mode = next((arg for arg in argv if not arg.startswith("-")), None)
    refused = parser.modes.get(mode or "", exc.parser)
    refused.print_usage(sys.stderr)
    print(f"{refused.prog}: error: {exc.message}", file=sys.stderr)
    if mode != "check":
        return EX_USAGE
    as_json = any(len(arg) > 2 and "--json".startswith(arg) for arg in argv)
    return _check_unknown(f"usage error: {exc.message}", as_json=as_json)


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

"""The simulator's one command line: ``python -m supervisor.simulator`` and
``wasend-supervisor simulate`` are both :func:`main` (only ``prog`` differs).

Defaults live here and in the scenario, once: ``--sessions`` overrides the scenario's
``session_count`` when given, else that count is used, else 10
(:data:`~supervisor.simulator.scenario.DEFAULT_SESSION_COUNT`).

The webhook HMAC key can come from the environment (:data:`HMAC_KEY_ENV`) rather than
the command line, where other users of the machine could read it; the flag wins.

Exit statuses: 0 after SIGINT or SIGTERM; 1 when the address cannot be listened on;
2 for a usage error (a bad flag or value) or a bad scenario, with one line on standard
error and never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .scenario import DEFAULT_SESSION_COUNT, MAX_SESSIONS
from .server import DEFAULT_PORT, serve

PROG = "python -m supervisor.simulator"
USAGE_ERROR = 2
MAX_PORT = 65535
HMAC_KEY_ENV = "WASEND_SIMULATOR_WEBHOOK_HMAC_KEY"


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high`` (argparse names the flag)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {value}")
        return value

    return parse


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="A stand-in WASend session API with fault injection.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=_bounded_int(0, MAX_PORT), default=DEFAULT_PORT,
                        help=f"port to listen on ({DEFAULT_PORT}); 0 picks a free one")
    parser.add_argument("--sessions", type=_bounded_int(0, MAX_SESSIONS),
                        default=None, metavar="N",
                        help="sessions to create (default: the scenario's session_count, "
                             f"else {DEFAULT_SESSION_COUNT})")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="the one key the API accepts (default: a random key, printed)")
    parser.add_argument("--scenario", default=None, metavar="FILE",
                        help="a TOML or JSON scenario (see config/scenario.example.toml)")
    parser.add_argument("--webhook-url", default=None, metavar="URL",
                        help="POST a WAHA-shaped session.status event to URL on every "
                             "status change (default: the scenario's webhook_url, else none)")
    parser.add_argument("--webhook-hmac-key", default=None, metavar="KEY",
                        help="sign the events with KEY (X-Webhook-Hmac, sha512); better "
                             f"given in the environment as {HMAC_KEY_ENV}")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG,
         out: TextIO | None = None) -> int:
    """Parse ``argv``, run the simulator in the foreground, return the exit status."""
    args = build_parser(prog).parse_args(argv)  # exits 2 on a usage error
    hmac_key = args.webhook_hmac_key or os.environ.get(HMAC_KEY_ENV) or None
    try:
        return serve(args.host, args.port, args.sessions, args.api_key, args.scenario, out,
                     webhook_url=args.webhook_url, webhook_hmac_key=hmac_key)
    except ValueError as exc:  # a bad scenario (ScenarioError) or a value the simulator refuses
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR

"""``python -m supervisor.simulator``: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import sys

from .scenario import ScenarioError
from .server import DEFAULT_PORT, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.simulator",
        description="A stand-in WASend session API with fault injection.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--sessions", type=int, default=None, help="sessions to create")
    parser.add_argument("--api-key", default=None, help="default: a random key, printed")
    parser.add_argument("--scenario", default=None, help="a TOML or JSON scenario file")
    args = parser.parse_args(argv)
    try:
        return serve(args.host, args.port, args.sessions, args.api_key, args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a session count out of range
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

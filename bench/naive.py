"""The baseline: the supervision loop many users write first.

Every ``--interval`` seconds it lists the sessions and restarts every one that is not
running. No backoff, no rate-limit handling (a 429 is just another failed request; its
``Retry-After`` is ignored), no verification that a restart took, and any error is
printed and the loop goes on. It is measured side by side with the supervisor, on the
same scenarios, by ``python -m bench``.

    WASEND_API_KEY=... python -m bench.naive --base-url http://127.0.0.1:8787 --interval 30
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

RUNNING = frozenset({"WORKING", "CONNECTED"})


def sessions_of(data: Any) -> list[tuple[str, str]]:
    """(id, status) of each session in a list answer, nested or flat."""
    items = data["sessions"] if isinstance(data, dict) else data
    found = []
    for item in items:
        if "session" in item:
            found.append((item["session"]["uniqueSessionId"], item["downstream"]["status"]))
        else:
            found.append((item["uniqueSessionId"], item["status"]))
    return found


def one_pass(client: httpx.Client) -> None:
    response = client.get("/sessions")
    for session_id, status in sessions_of(response.json()):
        if status not in RUNNING:
            client.post(f"/sessions/{session_id}/restart")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--base-url", default=os.environ.get("WASEND_BASE_URL"))
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    if not args.base_url:
        parser.error("--base-url or WASEND_BASE_URL is needed")
    headers = {"Authorization": f"Bearer {os.environ['WASEND_API_KEY']}"}
    with httpx.Client(base_url=args.base_url, headers=headers, timeout=15.0) as client:
        while True:
            try:
                one_pass(client)
            except Exception as exc:  # the usual "keep going whatever happens"
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if args.once:
                return 0
            time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())

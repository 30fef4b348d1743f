"""The container's HEALTHCHECK: exit 0 when the supervisor's /livez answers 200, else 1.

Runs with the image's own Python (no curl in the image). It asks the address in
WASEND_SUPERVISOR_HTTP_LISTEN (a wildcard host such as 0.0.0.0 is asked on loopback) and
only /livez, which never depends on the WASend API: an API outage must not make the
container unhealthy. Standard library only; nothing from the supervisor is imported, so it
stays fast and cannot be broken by a bad configuration.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

LISTEN_ENV = "WASEND_SUPERVISOR_HTTP_LISTEN"
DEFAULT_LISTEN = "0.0.0.0:9187"
TIMEOUT = 4.0  # seconds; below the HEALTHCHECK --timeout
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def livez_url(listen: str) -> str | None:
    """The /livez URL for a ``host:port`` listen address; None when the listener is off."""
    listen = listen.strip()
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/livez"


def main() -> int:
    url = livez_url(os.environ.get(LISTEN_ENV, DEFAULT_LISTEN))
    if url is None:
        print(f"unhealthy: {LISTEN_ENV} is empty, so there is no /livez to ask", file=sys.stderr)
        return 1
    # No proxy: an HTTP(S)_PROXY set for the API must not carry a loopback health check.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as answer:
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The QR code fetch of the status page: the daemon's own client, so its rate gate and
its key, as the poll cycle's calls.

The gate is inside the client (``WasendClient._call`` awaits it before every request and
tells it of every 429), so a QR fetch counts in the same budget and honours the same
``Retry-After`` pause as the cycle's list, get and restart calls, across processes on one
state file. Two things the cycle knows are answered here at once, with nothing sent,
instead of holding a person's page: a key the API refused (the supervisor's
``AuthBlock``: the cycle sends nothing until it is tried again) and a ``Retry-After``
pause this process is serving. A pause only another process has received so far is
learnt at the gate and waited out there, like the cycle's calls.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from supervisor.api.errors import AuthFailed, RateLimited
from supervisor.domain.models import QrCode
from supervisor.runtime.wiring import Runtime

__all__ = ["gated_qr"]


def gated_qr(current: Callable[[], Runtime]) -> Callable[[str], Awaitable[QrCode]]:
    """The ``fetch`` for ``supervisor.web.qr.QrFeed``: ``current()`` is the runtime in
    use at each call (``lambda: service.runtime``: a reload swaps it), whose client asks
    for the QR code. Raises the client's errors; ``AuthFailed`` or ``RateLimited`` with
    ``http_status`` None when nothing was sent (the key is refused, or paused)."""

    async def fetch(session_id: str) -> QrCode:
        runtime = current()
        supervisor = runtime.supervisor
        now = supervisor.clock.monotonic()
        if supervisor.auth.waiting(now):
            wait = math.ceil(supervisor.auth.retry_in(now))
            raise AuthFailed(
                f"qr: the API key was refused; it is tried again in {wait} s; nothing was sent",
                call="qr",
            )
        paused = runtime.gate.paused_for()
        if paused > 0:
            raise RateLimited(
                f"qr: the API key is paused by a Retry-After for {math.ceil(paused)} s more; "
                "nothing was sent",
                call="qr",
                http_status=None,
                retry_after=paused,
            )
        return await runtime.client.qr(session_id)

    return fetch

"""The QR code a person scans, drawn by the daemon and fetched only while someone looks.

* ``render_svg``: a payload as an SVG image (segno; nothing from outside, no script, no
  text of the payload in the document: only the drawn modules).
* ``QrFeed``: the current QR code of a session as SVG, for the page. Only ``svg()``
  fetches, and only when its copy is older than ``refresh`` seconds (nothing polls): a
  page that shows the code and asks again every few seconds costs one API call per
  session per ``refresh``, however many pages are open. Callers asking at the same time
  share one fetch. A session with no code to scan (the API answers 409/422, a
  ``Conflict``) gives None; any other failure raises the client's error, is logged
  ``qr.failed`` and is answered again for ``retry`` seconds before a new fetch is made.
  The cache holds only copies still fresh, of the sessions asked about; ``forget()``
  drops a session's at once (it is healthy: its code must not be shown again).

The payload is a secret (whoever scans it takes over the number): it is in no event
(``qr.fetched`` and ``qr.failed`` name the session), and the client adds it to the
process's ``Secrets``. ``fetch`` is whatever asks the API through the rate gate:
``supervisor.runtime.qr.gated_qr`` for the daemon.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Awaitable, Callable
from typing import Final

import structlog

from supervisor.api.errors import ApiError, Conflict
from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.domain.models import QrCode

__all__ = ["QrFeed", "render_svg"]

log = structlog.get_logger("supervisor.web.qr")

SCALE: Final = 8
"""Pixels per module of the SVG's own size (a page may draw it at any size: it is vector)."""
BORDER: Final = 4
"""The quiet zone around the code, in modules: the four the QR standard asks for."""


def render_svg(payload: str) -> bytes:
    """``payload`` as a QR code in an SVG document: black modules on a white ground (a
    phone reads it on a dark page too), a quiet zone of ``BORDER`` modules, no XML
    declaration, nothing but the drawing."""
    import segno  # noqa: PLC0415  (the web extra; loaded only once a code is drawn)

    out = io.BytesIO()
    segno.make_qr(payload).save(
        out, kind="svg", scale=SCALE, border=BORDER, dark="#000", light="#fff", xmldecl=False
    )
    return out.getvalue()


class _Copy:
    """What a fetch gave: the SVG (None: the session has no code now) or the error, and
    until when (monotonic) it is answered without a new fetch."""

    __slots__ = ("error", "svg", "until")

    def __init__(self, until: float, svg: bytes | None, error: ApiError | None = None) -> None:
        self.until = until
        self.svg = svg
        self.error = error


class QrFeed:
    """The current QR code of each session asked about, as SVG (see the module's text)."""

    def __init__(
        self,
        fetch: Callable[[str], Awaitable[QrCode]],
        clock: Clock,
        *,
        refresh: float = 20.0,
        retry: float = 5.0,
    ) -> None:
        if not (math.isfinite(refresh) and refresh > 0):
            raise ValueError("refresh must be a positive number of seconds")
        if not (math.isfinite(retry) and retry >= 0):
            raise ValueError("retry must be a number of seconds, 0 or more")
        self._fetch = fetch
        self._clock = clock
        self._refresh = refresh
        self._retry = retry
        self._copies: dict[str, _Copy] = {}
        self._fetching: dict[str, asyncio.Task[_Copy]] = {}

    def __repr__(self) -> str:
        return f"<QrFeed: {len(self._copies)} cached, {len(self._fetching)} being fetched>"

    def __len__(self) -> int:
        """How many sessions' copies are held (fresh ones only, after the last store)."""
        return len(self._copies)

    async def svg(self, session_id: str) -> bytes | None:
        """The session's current QR code as SVG, fetched if the copy held is older than
        ``refresh`` seconds; None when the API has none (no code to scan now). Raises the
        client's ``ApiError`` when the fetch failed."""
        copy = self._copies.get(session_id)
        if copy is None or self._clock.monotonic() >= copy.until:
            copy = await self._fetched(session_id)
        if copy.error is not None:
            raise copy.error.with_traceback(None)  # the same error again, not its old frames
        return copy.svg

    def forget(self, session_id: str) -> None:
        """Drop the session's copy, and any fetch in flight's result: the next ``svg()``
        fetches again. For a session that is healthy: its code is not shown any more."""
        self._copies.pop(session_id, None)
        self._fetching.pop(session_id, None)

    async def _fetched(self, session_id: str) -> _Copy:
        task = self._fetching.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self._fetch_one(session_id))
            task.add_done_callback(_retrieved)
            self._fetching[session_id] = task
        # A caller that goes away (its request cancelled) does not cancel the others' fetch.
        return await asyncio.shield(task)

    async def _fetch_one(self, session_id: str) -> _Copy:
        me = asyncio.current_task()
        try:
            copy = await self._copy_of(session_id)
        finally:
            mine = self._fetching.get(session_id) is me  # else forgotten meanwhile
            if mine:
                del self._fetching[session_id]
        if mine:
            self._keep(session_id, copy)
        return copy

    async def _copy_of(self, session_id: str) -> _Copy:
        """One fetch, drawn; an ``ApiError`` held as the copy, anything else raised."""
        try:
            code: QrCode | None = await self._fetch(session_id)
        except Conflict:
            code = None  # 409/422: no code to scan in the session's status
        except ApiError as exc:
            log.warning(ev.QR_FAILED, session_id=session_id, error=exc.kind,
                        http_status=exc.http_status)
            return _Copy(self._clock.monotonic() + self._retry, None, exc)
        except Exception as exc:  # not the API's answer (the state file, a bug): not held
            log.warning(ev.QR_FAILED, session_id=session_id, error=type(exc).__name__,
                        http_status=None)
            raise
        svg = None if code is None else render_svg(code.reveal())
        log.info(ev.QR_FETCHED, session_id=session_id, available=svg is not None)
        return _Copy(self._clock.monotonic() + self._refresh, svg)

    def _keep(self, session_id: str, copy: _Copy) -> None:
        """Hold ``copy``, and drop every copy whose time is over: the cache holds only
        what would be answered without a fetch."""
        now = self._clock.monotonic()
        stale = [sid for sid, held in self._copies.items() if now >= held.until]
        for sid in stale:
            del self._copies[sid]
        self._copies[session_id] = copy


def _retrieved(task: asyncio.Task[_Copy]) -> None:
    """Mark a fetch's failure as seen even if every caller went away before it ended."""
    if not task.cancelled():
        task.exception()

"""The status page: a Starlette application behind the daemon's own listener.

``create_app`` builds it from what it needs, all handed in: the board (the daemon's
sessions, ``web.board``), the operator (pause, resume, restart now), the QR feed, the
credentials (a callable: a SIGHUP may replace them), the login sessions, the login
limiter and the clock. The listener (``ops.listener``) hands it every request for a path
that is not a probe's, through ``httpx.ASGITransport``.

Routes::

    GET  /                          the sessions: summary, filters, one page of the table
    GET  /sessions/{id}             one session, its history, its QR code while it needs one
    GET  /sessions/{id}/qr.svg      the QR code to scan (Cache-Control: no-store)
    POST /sessions/{id}/restart     restart now        } a form with the CSRF token, or a
    POST /sessions/{id}/pause       pause supervision  } Bearer token (no CSRF then)
    POST /sessions/{id}/resume      resume it          }
    GET  /api/sessions              ``status --json``'s sessions (?class= &q= &page= &per_page=)
    GET  /api/sessions/{id}         one of them
    GET  /api/history               ``history --json``'s rows (?session= &limit=)
    GET  /login, POST /login        the login form (name and token); sets the cookie
    POST /logout                    forgets the login
    GET  /static/...                the stylesheet and the script
    GET  /metrics                   with ``http_metrics_auth`` only (else the listener's)

Everything but the login form and the static files needs a person known to the
credentials: ``Authorization: Bearer <token>``, or the login cookie (HttpOnly,
SameSite=Strict, Secure when the request came over https, as ``X-Forwarded-Proto`` says).
Without one, ``/api/*`` and the QR code answer 401 and a page redirects to the login. A
POST made with the cookie must carry the login's CSRF token (403 otherwise). Every answer
carries a strict Content-Security-Policy (nothing from anywhere else: the page works
offline), ``nosniff`` and ``no-referrer``; every answer but the static files is
``Cache-Control: no-store`` (the QR code is the WhatsApp account).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.api.errors import ApiError
from supervisor.clock import Clock
from supervisor.domain import events as ev
from supervisor.domain.models import Phase
from supervisor.runtime.operator import Refused
from supervisor.state.report import iso, span
from supervisor.web.auth import (
    REASON_BAD_CREDENTIALS,
    REASON_LOCKED_OUT,
    Credentials,
    LoginLimiter,
    Sessions,
    csrf_ok,
)
from supervisor.web.board import CLASSES, GROUP_OF, GROUPS, MAX_PER_PAGE, PER_PAGE, Board
from supervisor.web.qr import QrFeed

log = structlog.get_logger("supervisor.web")

HERE = Path(__file__).parent
COOKIE = "wasend_login"
CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
SCAN_HINT = "WhatsApp > Settings > Linked devices > Link a device"
QR_REFRESH = 10  # seconds between the page's fetches of the QR image (WhatsApp: 20 to 60)
REFRESH = 1.0  # seconds between an open page's fetches of its data
LOGIN_WAIT = 3.0  # a failed login's slowing, at most: the listener answers within 5 s
DASH = "\u2013"  # shown for no value


class Actions(Protocol):
    """What the page asks of the operator (``runtime.operator.Operator``)."""

    async def pause(self, session_id: str, by: str) -> None: ...

    async def resume(self, session_id: str, by: str) -> None: ...

    async def restart_now(self, session_id: str, by: str) -> None: ...


class Who:
    """The person a request was made by, and how: ``csrf`` is the login's token (None for
    a Bearer token, which needs none)."""

    __slots__ = ("csrf", "name", "sid")

    def __init__(self, name: str, csrf: str | None = None, sid: str | None = None) -> None:
        self.name = name
        self.csrf = csrf
        self.sid = sid


def create_app(
    board: Board,
    operator: Actions,
    qr: QrFeed,
    credentials: Callable[[], Credentials],
    sessions: Sessions,
    limiter: LoginLimiter,
    clock: Clock,
    *,
    refresh: float = REFRESH,
    login_wait: float = LOGIN_WAIT,
    metrics: Callable[[], tuple[bytes, str]] | None = None,
) -> ASGIApp:
    """The page's ASGI application; an open page fetches its data every ``refresh``
    seconds. A login after failed ones from its peer waits ``limiter.delay``, at most
    ``login_wait`` seconds (within the listener's deadline for an answer); a refused
    Bearer token counts as a failed login of its peer. ``metrics`` (the body and content
    type of ``/metrics``): served here, to the authenticated only (``http_metrics_auth``)."""
    signing = secrets.token_bytes(32)  # the actions' outcome messages, this process's
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(
        scan_hint=SCAN_HINT, qr_refresh=QR_REFRESH, groups=GROUPS, classes=CLASSES,
        refresh=refresh, phase_groups={phase.value: group for phase, group in GROUP_OF.items()})
    templates.env.filters.update(age=_age, later=_later)

    async def who(request: Request) -> Who | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            peer = _peer(request)
            if limiter.blocked(peer) is not None:
                log.warning(ev.HTTP_LOGIN_FAILED, peer=peer, reason=REASON_LOCKED_OUT)
                return None
            # A hashed token costs a scrypt: off the event loop.
            name = await asyncio.to_thread(credentials().bearer, token.strip())
            if name is None:
                limiter.failed(peer)
                log.warning(ev.HTTP_LOGIN_FAILED, peer=peer, reason=REASON_BAD_CREDENTIALS)
                return None
            return Who(name)
        sid = request.cookies.get(COOKIE)
        if sid:
            login = sessions.lookup(sid)
            if login is not None:
                return Who(login.name, login.csrf, sid)
        return None

    def refuse(request: Request) -> Response:
        path = request.url.path
        if (path.startswith("/api/") or path.endswith("/qr.svg") or path == "/metrics"
                or request.method == "POST"):
            return Response("authentication required\n", 401, media_type="text/plain",
                            headers={"www-authenticate": 'Bearer realm="wasend-supervisor"'})
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), 303)

    Handler = Callable[[Request, Who], Awaitable[Response]]

    def authed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            person = await who(request)
            if person is None:
                return refuse(request)
            if request.method == "POST" and person.sid is not None:
                form = await request.form()
                login = sessions.lookup(person.sid)
                if not csrf_ok(login, _text(form.get("csrf"))):
                    return Response("missing or wrong CSRF token\n", 403,
                                    media_type="text/plain")
            return await handler(request, person)

        return endpoint

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200,
             ) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    # --- pages ---

    async def index(request: Request, person: Who) -> Response:
        params = _filters(request)
        view = board.view(**params)
        return page(request, "index.html", {
            "who": person, "view": view, "params": params, "now": clock.now(),
            "query": urlencode({k: v for k, v in params.items() if v and k != "page"}),
        })

    async def session_page(request: Request, person: Who) -> Response:
        session_id = request.path_params["id"]
        found = board.session(session_id)
        if found is None:
            return page(request, "missing.html", {"who": person, "id": session_id}, 404)
        record, status = found
        history = await board.history([session_id])
        history.reverse()  # newest first
        return page(request, "session.html", {
            "who": person, "s": status, "history": history, "now": clock.now(),
            "needs_qr": record.phase is Phase.NEEDS_PERSON,
            "message": _verified(signing, request.query_params.get("msg", ""),
                                 request.query_params.get("sig", "")),
            "quoted": quote(session_id, safe=""),
        })

    async def qr_svg(request: Request, person: Who) -> Response:
        session_id = request.path_params["id"]
        found = board.session(session_id)
        if found is None or found[0].phase is not Phase.NEEDS_PERSON:
            qr.forget(session_id)
            return Response("no QR code: the session does not need one\n", 404,
                            media_type="text/plain")
        try:
            svg = await qr.svg(session_id)
        except ApiError as exc:
            return Response(f"the API gave no QR code: {type(exc).__name__}\n", 502,
                            media_type="text/plain")
        if svg is None:
            return Response("the API has no QR code for this session now\n", 404,
                            media_type="text/plain")
        return Response(svg, media_type="image/svg+xml")

    def action(name: str, call: Callable[[str, str], Awaitable[None]], done: str,
               ) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request, person: Who) -> Response:
            session_id = request.path_params["id"]
            try:
                await call(session_id, person.name)
            except Refused as exc:
                return _acted(signing, person, session_id, 409, f"refused: {exc}")
            except ApiError as exc:
                return _acted(signing, person, session_id, 502,
                              f"failed: {type(exc).__name__}")
            return _acted(signing, person, session_id, 200, done)

        act.__name__ = name
        return authed(act)

    # --- JSON ---

    async def api_sessions(request: Request, person: Who) -> Response:
        params = _filters(request)
        if "page" not in request.query_params:
            params["per_page"] = None
        view = board.view(**params)
        return JSONResponse({
            "now": iso(clock.now()), "total": view.total, "matched": view.matched,
            "page": view.page, "pages": view.pages, "per_page": view.per_page,
            "summary": view.summary, "sessions": view.sessions,
        })

    async def api_session(request: Request, person: Who) -> Response:
        found = board.session(request.path_params["id"])
        if found is None:
            return JSONResponse({"error": "no such session"}, 404)
        return JSONResponse({"now": iso(clock.now()), "session": found[1]})

    async def api_history(request: Request, person: Who) -> Response:
        ids = request.query_params.getlist("session")
        limit = _int(request.query_params.get("limit"), 200, 1, 10_000)
        return JSONResponse({"history": await board.history(ids, limit=limit)})

    # --- login ---

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", {"next": _next(request.query_params.get("next")),
                                            "problem": ""})

    async def login(request: Request) -> Response:
        peer = _peer(request)
        form = await request.form()
        target = _next(_text(form.get("next")))
        blocked = limiter.blocked(peer)
        if blocked is not None:
            log.warning(ev.HTTP_LOGIN_FAILED, peer=peer, reason=REASON_LOCKED_OUT)
            return page(request, "login.html", {
                "next": target, "problem": f"Too many failed logins: try again in "
                                           f"{span(blocked)}."}, 429)
        wait = min(limiter.delay(peer), login_wait)
        if wait > 0:
            await clock.sleep(wait)
        name, token = _text(form.get("name")).strip(), _text(form.get("token")).strip()
        known = credentials()
        # A hashed token costs a scrypt: off the event loop.
        if not name or not token or not await asyncio.to_thread(known.check, name, token):
            limiter.failed(peer)
            log.warning(ev.HTTP_LOGIN_FAILED, peer=peer, reason=REASON_BAD_CREDENTIALS)
            return page(request, "login.html", {
                "next": target, "problem": "That name and token do not match."}, 401)
        limiter.succeeded(peer)
        sid, _csrf = sessions.open(name, known.stamp(name))
        log.info(ev.HTTP_LOGIN, name=name, peer=peer)
        response = RedirectResponse(target, 303)
        response.set_cookie(COOKIE, sid, max_age=int(sessions.ttl), httponly=True,
                            samesite="strict", path="/",
                            secure=request.headers.get("x-forwarded-proto") == "https")
        return response

    async def logout(request: Request, person: Who) -> Response:
        if person.sid is not None:
            sessions.close(person.sid)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def metrics_page(request: Request, person: Who) -> Response:
        assert metrics is not None
        body, content_type = metrics()
        return Response(body, media_type=content_type)

    routes = [
        *([Route("/metrics", authed(metrics_page))] if metrics is not None else []),
        Route("/", authed(index)),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", authed(logout), methods=["POST"]),
        Route("/api/sessions", authed(api_sessions)),
        Route("/api/sessions/{id}", authed(api_session)),
        Route("/api/history", authed(api_history)),
        Route("/sessions/{id}", authed(session_page)),
        Route("/sessions/{id}/qr.svg", authed(qr_svg)),
        Route("/sessions/{id}/restart", action("restart", operator.restart_now,
                                               "restart requested"), methods=["POST"]),
        Route("/sessions/{id}/pause", action("pause", operator.pause, "supervision paused"),
              methods=["POST"]),
        Route("/sessions/{id}/resume", action("resume", operator.resume,
                                              "supervision resumed"), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return _Secured(Starlette(routes=routes))


class _Secured:
    """Adds the security headers to every answer, and ``no-store`` to all but the static
    files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control" or static]
                headers.extend(SECURITY_HEADERS)
                headers.append((b"cache-control", b"max-age=300" if static else b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


def _acted(signing: bytes, person: Who, session_id: str, status: int, message: str,
           ) -> Response:
    """An action's answer: JSON for a Bearer client, else back to the session's page with
    the outcome in words, signed (a link made elsewhere cannot put words on the page)."""
    if person.csrf is None:
        return JSONResponse({"ok": status == 200, "session_id": session_id,
                             "message": message}, status)
    target = f"/sessions/{quote(session_id, safe='')}?" + urlencode(
        {"msg": message, "sig": _sign(signing, message)})
    return RedirectResponse(target, 303)


def _sign(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def _verified(key: bytes, message: str, signature: str) -> str:
    """``message`` if this process signed it, else nothing."""
    if message and hmac.compare_digest(_sign(key, message), signature):
        return message[:300]
    return ""


def _filters(request: Request) -> dict[str, Any]:
    query = request.query_params
    klass = query.get("class", "")
    return {
        "klass": klass if klass in CLASSES else "",
        "query": query.get("q", "")[:200],
        "page": _int(query.get("page"), 1, 1, 1_000_000),
        "per_page": _int(query.get("per_page"), PER_PAGE, 1, MAX_PER_PAGE),
    }


def _age(since: str | None, now: float) -> str:
    """How long ago an ISO time was: ``4m10s``; a dash for none."""
    if not since:
        return DASH
    return span(now - datetime.fromisoformat(since).timestamp())


def _later(seconds: float | None) -> str:
    """``in 4m10s``, ``now`` (due), a dash for none."""
    if seconds is None:
        return DASH
    return f"in {span(seconds)}" if seconds >= 0.5 else "now"


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(text or default)))
    except ValueError:
        return default


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _next(target: str | None) -> str:
    """Where to go after the login: a path of this site only (never ``//elsewhere``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target

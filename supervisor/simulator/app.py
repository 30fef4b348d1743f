"""The Starlette app: the WASend session API and the admin API under ``/_simulator/``.

Every API request goes through :class:`SimulatorGate` (pure ASGI), which asks the
simulator how to answer it (auth, rate limit, outage, faults), carries out hangs and
latency, and logs it once answered. Admin requests skip the gate and the log; they
need the API key only when the server does not listen on a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import render
from .scenario import ScenarioError
from .simulator import Simulator
from .state import UnknownSession

ADMIN_PREFIX: Final = "/_simulator"
MALFORMED: Final = "wasend_simulator.malformed"
_JSON: Final = "application/json"


def admin_requires_key(host: str) -> bool:
    """Whether the admin API must ask for the API key when the server listens on
    ``host``: always, unless ``host`` is a loopback address or ``localhost``."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(name).is_loopback
    except ValueError:
        return True


class HangControl:
    """Lets the server end every hang at once when it stops."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    def event(self) -> asyncio.Event:
        """The event hangs on the running loop wait for (one per loop)."""
        loop = asyncio.get_running_loop()
        event = self._events.get(loop)
        if event is None:
            self._events = {k: v for k, v in self._events.items() if not k.is_closed()}
            event = self._events[loop] = asyncio.Event()
        return event

    def release(self) -> None:
        """End every hang on the running loop now (call it on that loop)."""
        self.event().set()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _send_bytes(
    send: Send, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()
) -> None:
    raw = [(b"content-type", _JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class SimulatorGate:
    """ASGI middleware: admission, hangs, latency and logging of API requests."""

    def __init__(
        self, app: ASGIApp, *, simulator: Simulator, admin_requires_key: bool, hangs: HangControl
    ) -> None:
        self.app = app
        self.simulator = simulator
        self.admin_requires_key = admin_requires_key
        self.hangs = hangs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            if self.admin_requires_key and not self.simulator.authorized(
                _header(scope, b"authorization")
            ):
                body = render.error_body(401, "the admin API needs the API key on this address")
                await _send_bytes(send, 401, body, (("www-authenticate", 'Bearer realm="wasend"'),))
                return
            await self.app(scope, receive, send)
            return
        await self._api(scope, receive, send)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        admission = self.simulator.admit(
            scope["method"], scope["path"], _header(scope, b"authorization")
        )
        status: int | None = None
        logged = False

        def log() -> None:
            # Logged just before the last byte goes out, so that a client that has
            # its answer finds the request in the log.
            nonlocal logged
            if not logged:
                logged = True
                self.simulator.finish(admission, status,
                                      _header(scope, b"user-agent") or "")

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                log()
            await send(message)

        try:
            if body is None:
                return
            if admission.hang > 0 and await self._hold(admission.hang, receive):
                return  # the client went away: no answer
            if admission.latency > 0:
                await asyncio.sleep(admission.latency)
            if admission.status is not None:
                error = render.error_body(admission.status, admission.message)
                await _send_bytes(answer, admission.status, error, admission.headers)
                return
            inner = {**scope, MALFORMED: True} if admission.malformed else scope
            try:
                await self.app(inner, _replay(body, receive), answer)
            except Exception:
                status = 500 if status is None else status
                raise
        finally:
            log()

    async def _hold(self, seconds: float, receive: Receive) -> bool:
        """Hang for ``seconds``; True if the client disconnected meanwhile."""
        gone = asyncio.ensure_future(_until_disconnect(receive))
        released = asyncio.ensure_future(self.hangs.event().wait())
        try:
            await asyncio.wait(
                {gone, released}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
            )
            return gone.done() and not gone.cancelled() and gone.exception() is None
        finally:
            for task in (gone, released):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


Endpoint = Callable[[Request], Awaitable[Response]]


def _api_response(request: Request, result: tuple[int, bytes]) -> Response:
    code, body = result
    if request.scope.get(MALFORMED) and code < 300 and body:
        body = body[: len(body) // 2]  # a strict prefix of an object or array is never JSON
    return Response(body, status_code=code, media_type=_JSON if body else None)


def _api_routes(sim: Simulator) -> list[Route]:
    async def list_sessions(request: Request) -> Response:
        return _api_response(request, (200, sim.api_list()))

    async def create_session(request: Request) -> Response:
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            return _api_response(request, (400, render.error_body(400, "the body is not JSON")))
        return _api_response(request, sim.api_create(payload))

    async def get_session(request: Request) -> Response:
        return _api_response(request, sim.api_get(request.path_params["session_id"]))

    async def delete_session(request: Request) -> Response:
        return _api_response(request, sim.api_delete(request.path_params["session_id"]))

    async def start(request: Request) -> Response:
        return _api_response(request, sim.api_action(request.path_params["session_id"], "start"))

    async def stop(request: Request) -> Response:
        return _api_response(request, sim.api_action(request.path_params["session_id"], "stop"))

    async def restart(request: Request) -> Response:
        return _api_response(request, sim.api_action(request.path_params["session_id"], "restart"))

    async def qr(request: Request) -> Response:
        return _api_response(request, sim.api_qr(request.path_params["session_id"]))

    return [
        Route("/sessions", list_sessions, methods=["GET"]),
        Route("/sessions", create_session, methods=["POST"]),
        Route("/sessions/{session_id}", get_session, methods=["GET"]),
        Route("/sessions/{session_id}", delete_session, methods=["DELETE"]),
        Route("/sessions/{session_id}/start", start, methods=["POST"]),
        Route("/sessions/{session_id}/stop", stop, methods=["POST"]),
        Route("/sessions/{session_id}/restart", restart, methods=["POST"]),
        Route("/sessions/{session_id}/auth/qr", qr, methods=["GET"]),  # the SDK's path
        Route("/sessions/{session_id}/qr", qr, methods=["GET"]),  # the provider page's
    ]


class _BadRequest(Exception):
    pass


async def _json_body(request: Request) -> Mapping[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise _BadRequest("the body must be a JSON object")
    return data


def _admin(handler: Endpoint) -> Endpoint:
    """Map the admin API's errors to 400/404 answers with ``{"error": message}``."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (ScenarioError, ValueError, _BadRequest) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except UnknownSession as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    return wrapped


def _admin_routes(sim: Simulator) -> list[Route]:
    async def list_states(request: Request) -> Response:
        return JSONResponse({"sessions": sim.statuses()})

    async def add_sessions(request: Request) -> Response:
        body = await _json_body(request)
        unknown = set(body) - {"count", "status", "sessions"}
        if unknown:
            raise ScenarioError(f"{sorted(unknown)[0]}: unknown key (use count, status, sessions)")
        count = body.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int):
            raise ScenarioError("count: must be an integer")
        status = body.get("status", "WORKING")
        if not isinstance(status, str):
            raise ScenarioError("status: must be a string")
        specs = body.get("sessions", [])
        if not isinstance(specs, list):
            raise ScenarioError("sessions: must be a list of session objects")
        added = sim.add_sessions(count, status=status, specs=specs)
        return JSONResponse({"added": added}, status_code=201)

    async def one_state(request: Request) -> Response:
        return JSONResponse(sim.session(request.path_params["session_id"]))

    async def patch_state(request: Request) -> Response:
        sid = request.path_params["session_id"]
        body = await _json_body(request)
        unknown = set(body) - {"status", "outcome", "zombie"}
        if unknown:
            raise ScenarioError(f"{sorted(unknown)[0]}: unknown key (use status, outcome, "
                                "zombie)")
        zombie = body.get("zombie", False)
        if not isinstance(zombie, bool):
            raise ScenarioError("zombie: must be true or false")
        sim.status(sid)  # 404 before any change
        if "outcome" in body:
            sim.set_outcome(sid, body["outcome"])
        if "status" in body:
            _set_status(sim, sid, body["status"])
        if "zombie" in body:  # after the status, which would end it
            sim.set_zombie(sid, zombie)
        return JSONResponse(sim.session(sid))

    async def set_status(request: Request) -> Response:
        sid = request.path_params["session_id"]
        body = await _json_body(request)
        if set(body) != {"status"}:
            raise ScenarioError('the body must be {"status": "<STATUS>"}')
        _set_status(sim, sid, body["status"])
        return JSONResponse(sim.session(sid))

    async def one_qr(request: Request) -> Response:
        return JSONResponse(sim.qr_state(request.path_params["session_id"]))

    async def get_faults(request: Request) -> Response:
        return JSONResponse(sim.faults_dict())

    async def patch_faults(request: Request) -> Response:
        return JSONResponse(sim.update_faults(**await _json_body(request)).to_dict())

    async def put_faults(request: Request) -> Response:
        return JSONResponse(sim.replace_faults(**await _json_body(request)).to_dict())

    async def get_requests(request: Request) -> Response:
        query = request.query_params
        since = _query_float(query, "since")
        after = _query_int(query, "after")
        limit = _query_int(query, "limit")
        records = sim.requests(since=since, after=after)
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return JSONResponse({"requests": [r.to_dict() for r in records], "count": len(records)})

    async def clear_requests(request: Request) -> Response:
        sim.reset_log()
        return JSONResponse({"cleared": True})

    async def stats(request: Request) -> Response:
        return JSONResponse(sim.stats())

    async def reset(request: Request) -> Response:
        sim.reset()
        return JSONResponse({"reset": True})

    async def get_webhooks(request: Request) -> Response:
        query = request.query_params
        records = sim.webhooks(after=_query_int(query, "after"))
        limit = _query_int(query, "limit")
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return JSONResponse({"webhooks": [r.to_dict() for r in records], "count": len(records)})

    async def clear_webhooks(request: Request) -> Response:
        sim.clear_webhooks()
        return JSONResponse({"cleared": True})

    async def webhook_settings(request: Request) -> Response:
        return JSONResponse(sim.webhook_settings.to_dict())

    async def patch_webhooks(request: Request) -> Response:
        return JSONResponse(sim.update_webhooks(**await _json_body(request)).to_dict())

    async def burst(request: Request) -> Response:
        body = await _json_body(request)
        unknown = set(body) - {"count", "sessions", "status", "bad_signature"}
        if unknown:
            raise ScenarioError(f"{sorted(unknown)[0]}: unknown key (use count, sessions, "
                                "status, bad_signature)")
        sessions = body.get("sessions")
        if sessions is not None and (
            not isinstance(sessions, list) or not all(isinstance(s, str) for s in sessions)
        ):
            raise ScenarioError("sessions: must be a list of session ids or null")
        status = body.get("status", "WORKING")
        if not isinstance(status, str):
            raise ScenarioError("status: must be a string")
        bad = body.get("bad_signature", False)
        if not isinstance(bad, bool):
            raise ScenarioError("bad_signature: must be true or false")
        queued = sim.webhook_burst(body.get("count", 0), sessions, status, bad)
        return JSONResponse({"queued": queued}, status_code=202)

    return [
        Route("/sessions", _admin(list_states), methods=["GET"]),
        Route("/sessions", _admin(add_sessions), methods=["POST"]),
        Route("/sessions/{session_id}", _admin(one_state), methods=["GET"]),
        Route("/sessions/{session_id}", _admin(patch_state), methods=["PATCH"]),
        Route("/sessions/{session_id}/status", _admin(set_status), methods=["POST"]),
        Route("/sessions/{session_id}/qr", _admin(one_qr), methods=["GET"]),
        Route("/faults", _admin(get_faults), methods=["GET"]),
        Route("/faults", _admin(patch_faults), methods=["PATCH"]),
        Route("/faults", _admin(put_faults), methods=["PUT"]),
        Route("/requests", _admin(get_requests), methods=["GET"]),
        Route("/requests", _admin(clear_requests), methods=["DELETE"]),
        Route("/stats", _admin(stats), methods=["GET"]),
        Route("/reset", _admin(reset), methods=["POST"]),
        Route("/webhooks", _admin(get_webhooks), methods=["GET"]),
        Route("/webhooks", _admin(clear_webhooks), methods=["DELETE"]),
        Route("/webhooks", _admin(patch_webhooks), methods=["PATCH"]),
        Route("/webhooks/settings", _admin(webhook_settings), methods=["GET"]),
        Route("/webhooks/burst", _admin(burst), methods=["POST"]),
    ]


def _set_status(sim: Simulator, sid: str, status: object) -> None:
    if not isinstance(status, str):
        raise ScenarioError("status: must be a string")
    sim.set_status(sid, status)


def _query_float(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ScenarioError(f"{name}: must be a number, got {raw!r}") from None


def _query_int(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ScenarioError(f"{name}: must be an integer, got {raw!r}") from None


async def _http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error"
    if request.url.path.startswith(ADMIN_PREFIX):
        return JSONResponse({"error": detail}, status_code=code)
    return Response(render.error_body(code, detail), status_code=code, media_type=_JSON)


def create_app(
    simulator: Simulator, *, admin_requires_key: bool, hangs: HangControl | None = None
) -> Starlette:
    """The ASGI app serving ``simulator``."""
    return Starlette(
        routes=[*_api_routes(simulator), Mount(ADMIN_PREFIX, routes=_admin_routes(simulator))],
        middleware=[
            Middleware(
                SimulatorGate,
                simulator=simulator,
                admin_requires_key=admin_requires_key,
                hangs=hangs if hangs is not None else HangControl(),
            )
        ],
        exception_handlers={HTTPException: _http_error},
    )

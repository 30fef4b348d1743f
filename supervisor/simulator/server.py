"""Running the simulator: uvicorn in a background thread, and ``serve`` in the foreground.

:class:`SimulatorServer` binds its socket itself (so port 0 reports the real port and a
bind error surfaces in :meth:`~SimulatorServer.start`), runs uvicorn on its own event
loop in a daemon thread, and watches for ``refuse`` outages: it closes the listening
sockets (new connections are refused), drops the open ones, and binds the same port
again when the outage ends. On the same loop it sends the simulator's webhooks (the
:class:`~.webhooks.Dispatcher`) and, while webhooks are on, runs a timer that wakes at
the earliest pending change of any session and applies it, so that its event goes out
at its time rather than at the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, TextIO

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import HangControl, admin_requires_key, create_app
from .scenario import Scenario, load_scenario
from .simulator import Simulator
from .webhooks import Dispatcher

WATCH_INTERVAL: Final = 0.01
TIMER_MAX_WAIT: Final = 0.25  # the timer looks again at least this often (a moved clock)
START_TIMEOUT: Final = 10.0
DEFAULT_PORT: Final = 8787


class _Listening:
    """Whether the server accepts connections; shared with the protocol instances."""

    def __init__(self) -> None:
        self.refusing = False


def _gated_protocol(state: _Listening) -> type[H11Protocol]:
    """uvicorn's h11 protocol, dropping connections while an outage refuses them."""

    class GatedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if state.refusing:
                self.transport.abort()

        def data_received(self, data: bytes) -> None:
            if state.refusing:
                self.transport.abort()
                return
            super().data_received(data)

    return GatedH11Protocol


def _bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound (not yet listening) to every address of ``host``, all on one port.

    Raises :class:`OSError` if no address can be bound.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    error: OSError | None = None
    for family, kind, proto, _, found in infos:
        if (family, found[0]) in seen:
            continue
        seen.add((family, found[0]))
        address = found
        if sockets:  # the others follow the first one's (maybe chosen) port
            address = (found[0], sockets[0].getsockname()[1], *found[2:])
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sockets.append(sock)
    if not sockets:
        raise error or OSError(f"cannot listen on {host}:{port}")
    return sockets


class SimulatorServer:
    """The simulator over real HTTP, in a background thread.

    ``start()`` returns once the server listens; ``stop()`` shuts it down; it is also a
    context manager. Port 0 picks a free port (``.port`` then reports it). Either pass a
    ready ``simulator`` or let the server build one from ``sessions``, ``api_key`` and
    ``scenario`` (a :class:`Scenario` or the path of a scenario file), and
    ``webhook_url``/``webhook_hmac_key`` (which win over the scenario's).
    """

    def __init__(
        self,
        simulator: Simulator | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sessions: int | None = None,
        api_key: str | None = None,
        scenario: Scenario | str | Path | None = None,
        webhook_url: str | None = None,
        webhook_hmac_key: str | None = None,
    ) -> None:
        given = (sessions, api_key, scenario, webhook_url, webhook_hmac_key)
        if simulator is not None and given != (None,) * len(given):
            raise ValueError("give either a simulator or sessions/api_key/scenario/webhooks, "
                             "not both")
        if simulator is None:
            loaded = load_scenario(scenario) if isinstance(scenario, str | Path) else scenario
            simulator = Simulator(loaded, sessions=sessions, api_key=api_key,
                                  webhook_url=webhook_url, webhook_hmac_key=webhook_hmac_key)
        self.simulator: Final[Simulator] = simulator
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._hangs = HangControl()
        self._listening = _Listening()
        self._app = create_app(
            simulator, admin_requires_key=admin_requires_key(host), hangs=self._hangs
        )
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._stopped = False

    # -- public ---------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self.simulator.api_key

    @property
    def app(self) -> Starlette:
        """The ASGI app this server runs (usable in-process, e.g. with httpx.ASGITransport)."""
        return self._app

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL to give a client, e.g. ``http://127.0.0.1:8787``."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def listening(self) -> bool:
        """False while a ``refuse`` outage keeps the port closed."""
        return self.running and not self._listening.refusing

    def wait_listening(self, listening: bool = True, timeout: float = 5.0) -> bool:
        """Wait until :attr:`listening` equals ``listening``; False on timeout.

        A ``refuse`` outage closes the port within a few milliseconds of its start (and
        opens it again as soon as it ends); this waits for that to have happened.
        """
        deadline = time.monotonic() + timeout
        while self.listening != listening:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def start(self) -> SimulatorServer:
        """Bind, start serving in a background thread, and return once listening.

        Raises :class:`OSError` if the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("a SimulatorServer can be started only once")
        sockets = _bind(self.host, self._requested_port)
        self._port = sockets[0].getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(sockets,), name=f"wasend-simulator:{self._port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            self.stop()
            raise RuntimeError("the simulator did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (ends hanging requests) and wait for the thread to finish."""
        self._stopped = True
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._request_exit)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the server thread ------------------------------------------------------------

    def _request_exit(self) -> None:
        self._hangs.release()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def _run(self, sockets: list[socket.socket]) -> None:
        try:
            asyncio.run(self._main(sockets))
        except BaseException as exc:  # reported to start(), never re-raised in this thread
            self._error = exc
        finally:
            for sock in sockets:
                sock.close()
            self._ready.set()

    async def _main(self, sockets: list[socket.socket]) -> None:
        self._loop = asyncio.get_running_loop()
        config = uvicorn.Config(
            self._app,
            http=_gated_protocol(self._listening),
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._uvicorn = server
        if self._stopped:
            return
        serving = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started:
            done, _ = await asyncio.wait({serving}, timeout=0.002)
            if done:
                await serving  # raises what stopped it
                return
        helpers = [
            asyncio.create_task(self._watch(server, config)),
            asyncio.create_task(Dispatcher(self.simulator.webhook_hub, self.simulator.clock).run()),
            asyncio.create_task(self._timer()),
        ]
        self._ready.set()
        try:
            await serving
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _timer(self) -> None:
        """While webhooks are on, apply each change of status at its time."""
        loop = asyncio.get_running_loop()
        kick = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(kick.set)

        sim = self.simulator
        sim.attach_timer(wake)
        try:
            while True:
                kick.clear()
                due = sim.advance_due()
                wait = TIMER_MAX_WAIT if due is None else min(max(due, 0.0), TIMER_MAX_WAIT)
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(kick.wait(), wait)
        finally:
            sim.attach_timer(None)

    async def _watch(self, server: uvicorn.Server, config: uvicorn.Config) -> None:
        """Close the port during a ``refuse`` outage; bind it again afterwards."""
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=server.server_state,
                app_state=server.lifespan.state,
                _loop=loop,
            )

        while not server.should_exit:
            refusing = self.simulator.refusing()
            if refusing and not self._listening.refusing:
                self._listening.refusing = True
                for listener in server.servers:
                    listener.close()
                for connection in list(server.server_state.connections):
                    connection.transport.abort()
            elif not refusing and self._listening.refusing:
                try:
                    sockets = _bind(self.host, self.port)
                except OSError:
                    pass  # someone holds the port: try again on the next tick
                else:
                    server.servers = [
                        await loop.create_server(protocol, sock=sock, backlog=config.backlog)
                        for sock in sockets
                    ]
                    self._listening.refusing = False
            await asyncio.sleep(WATCH_INTERVAL)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    sessions: int | None = None,
    api_key: str | None = None,
    scenario_path: str | Path | None = None,
    out: TextIO | None = None,
    webhook_url: str | None = None,
    webhook_hmac_key: str | None = None,
) -> int:
    """Run the simulator in the foreground until SIGINT or SIGTERM, then return 0.

    Prints ``WASEND_BASE_URL=…`` and ``WASEND_API_KEY=…`` (one per line) to ``out``
    (default: standard output) once listening. Raises :class:`ScenarioError` for a bad
    scenario (before listening). If the address cannot be bound it says so on standard
    error and returns 1. Must be called from the main thread (it installs signal
    handlers, and restores them on return).
    """
    stream = out if out is not None else sys.stdout
    scenario = load_scenario(scenario_path) if scenario_path is not None else None
    server = SimulatorServer(
        host=host, port=port, sessions=sessions, api_key=api_key, scenario=scenario,
        webhook_url=webhook_url, webhook_hmac_key=webhook_hmac_key,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except OSError as exc:
            print(f"error: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 1
        print(f"WASEND_BASE_URL={server.base_url}", file=stream)
        print(f"WASEND_API_KEY={server.api_key}", file=stream)
        stream.flush()
        while not stop.wait(0.2):
            if not server.running:
                return 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

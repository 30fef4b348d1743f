"""``run`` as a service: the daemon and what operators see of it.

Puts together, around one ``Daemon``: the systemd notifications (``sdnotify``), the
health and metrics listener (``listener``, ``health``, ``metrics``) and the reload on
SIGHUP (``reload``), the alerts when they are configured (``alert_wiring``: the
episodes after each poll, their delivery in the background), and the status page when
``http_auth_file`` is set (``StatusPage``: the ``web`` application behind the listener).
Each is hooked to the daemon through its hooks and to the supervisor through its event
observers; none of them is part of the poll cycle.

A reload is a rebuild: the runtime is built again from the new settings
(``wiring.rebuild``, handed the store, the gate's state and the supervisor's continuity
and observers), swapped in while the daemon holds the next poll back, and the old client
is closed once no poll uses it.

Order at start: the listener binds (a failure is ``ListenError``, before any poll), then
the daemon starts its scheduler. Order at stop: ``STOPPING=1``, the scheduler stops (the
poll in flight finishes within ``shutdown_grace``), the watchdog stops, the listener
closes, ``daemon.stopped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from supervisor.config.model import Settings, listen_address
from supervisor.domain import events as ev
from supervisor.domain.models import Phase, Record
from supervisor.domain.secrets import Secrets
from supervisor.ops.census import Census
from supervisor.ops.health import Health, Verdict
from supervisor.ops.listener import HttpListener, ListenError, Reply
from supervisor.ops.metrics import CONTENT_TYPE, Metrics
from supervisor.ops.sdnotify import Notifier, SystemdHooks, watchdog_interval
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.runtime.daemon import Daemon, PollScheduler, Schedule
from supervisor.runtime.operator import Operator
from supervisor.runtime.reload import Reloader
from supervisor.runtime.wiring import Runtime, build, rebuild
from supervisor.state.store import StateError

if TYPE_CHECKING:
    from supervisor.alert_wiring import Alerts
    from supervisor.runtime.leadership import Leadership
    from supervisor.web.auth import Credentials, Sessions
    from supervisor.web.qr import QrFeed

__all__ = ["ListenError", "PageError", "Service", "StatusPage", "WebhookEndpoint"]

log = structlog.get_logger("supervisor.service")


QR_COPY = 5.0  # seconds a QR code fetched for the page is shown again without a new fetch


class PageError(Exception):
    """The status page cannot be served (its auth file): one line naming the setting."""


class Service:
    def __init__(
        self,
        runtime: Runtime,
        metrics: Metrics,
        *,
        env: Mapping[str, str],
        load: Callable[[], Settings] | None = None,
        configure_logs: Callable[[Settings], None] | None = None,
        pid: int | None = None,
        scheduler: PollScheduler | None = None,
        alerts: Alerts | None = None,
        credentials: Credentials | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        """``credentials``: the status page's logins (``http_auth_file`` read), or None:
        no page. ``leadership``: among replicas (``ha``), which of them polls."""
        settings = runtime.settings
        supervisor = runtime.supervisor
        self.runtime = runtime
        self.metrics = metrics
        self.configure_logs = configure_logs
        self.daemon = Daemon(
            supervisor,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.shutdown_grace,
            poll_jitter=settings.poll_jitter,
            scheduler=scheduler,
            clock=supervisor.clock,
        )
        # Work beside the daemon (old clients closed once idle, alerts sent at once),
        # awaited by ``aclose``.
        self._beside: set[asyncio.Task[None]] = set()
        # A person's actions on the sessions (pause, resume, restart now), for the page.
        self.operator = Operator(self.daemon)
        self.leadership = leadership
        self.health = Health(supervisor.clock, unready_after=settings.unready_threshold,
                             alive=self.daemon.alive,
                             leadership=None if leadership is None else leadership.view)
        self.systemd = SystemdHooks(
            Notifier.from_env(env),
            watchdog=watchdog_interval(env, os.getpid() if pid is None else pid),
        )
        if leadership is not None:
            self.daemon.may_poll = leadership.acting
            leadership.on_elected.append(  # the supervisor of the moment: a reload swaps it
                lambda: self.runtime.supervisor.took_over())  # noqa: PLW0108
            leadership.on_elected.append(self.daemon.wake)
            leadership.on_standby.append(self.systemd.standing_by)
            self.daemon.background.append(leadership.run)
            # After the last poll (the scheduler stopped): the standbys take over at once.
            self.daemon.closers.append(self._resign)
            metrics.watch_leadership(leadership.view)
        self.listener: HttpListener | None = None
        self.page: StatusPage | None = None
        self.webhooks = WebhookEndpoint(self, settings) if settings.webhooks.enabled else None
        posts = {} if self.webhooks is None else {self.webhooks.path: self.webhooks.handle}
        self.webhook_listener: HttpListener | None = None
        hook_address = listen_address(settings.webhooks.listen)
        if self.webhooks is not None and hook_address is not None:  # an address of its own
            self.webhook_listener = HttpListener(*hook_address, {}, posts=posts)
            self.daemon.closers.append(self.webhook_listener.close)
            posts = {}
        if self.webhooks is not None:
            self.daemon.background.append(self.webhooks.run)
            self.daemon.on_stopping.append(self.webhooks.stop.set)
        address = listen_address(settings.http_listen)
        if address is not None:
            routes = {
                "/livez": lambda: _json(self.health.liveness()),
                "/readyz": lambda: _json(self.health.readiness()),
                "/metrics": lambda: Reply(200, self.metrics.render(), CONTENT_TYPE),
            }
            if credentials is not None:
                self.page = StatusPage(self, credentials)
                if settings.http_metrics_auth:  # the page's application asks for a token
                    del routes["/metrics"]
            self.listener = HttpListener(
                *address, routes, app=None if self.page is None else self.page.app,
                posts=posts)
            self.daemon.closers.append(self.listener.close)
            metrics.watch_listener(self.listener)
        self.reloader: Reloader | None = None
        if load is not None:
            if alerts is not None:  # told of the settings as loaded, before any is kept
                load = _telling(load, alerts.reloaded)
            self.reloader = Reloader(load, settings, self._apply, reported=metrics.reloaded)
            self.daemon.on_reload = self.reloader.reload

        supervisor.observers.append(metrics.observe_event)
        self.daemon.after_poll.append(self._after_poll)
        self._census: Census | None = None  # as the last poll left the state
        self.daemon.on_stopping.append(self.systemd.stopping)
        if self.systemd.watchdog_interval is not None:
            self.daemon.background.append(self.systemd.watchdog)
        self.alerts = alerts
        self._stop_sending = asyncio.Event()
        self._sending: asyncio.Task[None] | None = None
        if alerts is not None and leadership is not None:  # said at once, without the outbox
            leadership.on_stopped.append(lambda problem: self._spawn(
                alerts.supervision_stopped(leadership.replica, problem, self.runtime.clock.now())))
            leadership.on_resumed.append(lambda: self._spawn(
                alerts.supervision_resumed(self.runtime.clock.now())))
        if alerts is not None:  # episodes after each poll; their delivery in the background
            self.daemon.after_poll.append(alerts.after_poll)
            self.daemon.background.append(self._send_alerts)
            self.daemon.on_stopping.append(self._stop_sending.set)
            self.daemon.closers.append(self._finish_alerts)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        env: Mapping[str, str],
        load: Callable[[], Settings] | None = None,
        configure_logs: Callable[[Settings], None] | None = None,
        scheduler: PollScheduler | None = None,
        **build_args: Any,
    ) -> Service:
        """The status page's logins (PageError when ``http_auth_file`` cannot be used),
        metrics, then the runtime with the client reporting to them, then the service."""
        credentials = None  # read first: a file that cannot be used is a PageError
        if settings.http_auth_file is not None and settings.http_listen:
            credentials = read_credentials(settings, build_args.get("secrets"))
        metrics = Metrics(per_session=settings.metrics_per_session,
                          alerts=settings.alerts.enabled)
        replica = ""
        if settings.ha_enabled():
            from supervisor.runtime.leadership import replica_name  # noqa: PLC0415

            replica = replica_name(settings.ha.replica)
        runtime = build(settings, observer=metrics.observe_request, replica=replica,
                        **build_args)
        leadership = None
        if replica:
            from supervisor.runtime.leadership import build_leadership  # noqa: PLC0415

            leadership = build_leadership(settings, runtime.store, runtime.clock, replica)
            runtime.gate.permit = leadership.permit
        metrics.watch_gate(runtime.gate)
        alerts = None
        if settings.alerts.enabled:
            # Imported here: a daemon without alerts loads none of it (nor Apprise).
            from supervisor.alert_wiring import Alerts  # noqa: PLC0415

            alerts = Alerts.build(settings, runtime.store, runtime.clock,
                                  runtime.secrets or Secrets(), metrics=metrics)
        return cls(runtime, metrics, env=env, load=load, configure_logs=configure_logs,
                   scheduler=scheduler, alerts=alerts, credentials=credentials,
                   leadership=leadership)

    async def open(self) -> None:
        """Bind the listeners, if there are any. Raises ListenError (one line)."""
        if self.listener is not None:
            await self.listener.start()
        if self.webhook_listener is not None:
            await self.webhook_listener.start()

    async def run(self) -> int:
        """Run until a signal (or ``daemon.request_stop``); the exit status."""
        self.systemd.starting()
        return await self.daemon.run()

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        if self.webhook_listener is not None:
            await self.webhook_listener.close()
        self.systemd.notifier.close()
        await asyncio.gather(*self._beside)  # the daemon has stopped: no poll uses them
        await self.runtime.aclose()

    # --- hooks ---

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the daemon (``aclose`` waits for it)."""
        task = asyncio.ensure_future(work)
        self._beside.add(task)
        task.add_done_callback(self._beside.discard)

    async def _resign(self) -> None:
        assert self.leadership is not None
        await self.leadership.resign()
        await self.leadership.aclose()

    async def _after_poll(self, supervisor: Supervisor, result: PollResult) -> None:
        """After each poll: the sessions counted from the state (read on the store's own
        thread; a state that cannot be read keeps the last count), for the metrics, the
        probes, systemd's status line and the page."""
        store = self.runtime.store
        records: list[Record] | None
        try:
            records = await store.run(lambda: list(store.records()))
        except StateError:
            records = None  # the poll says why (``state_error``): readiness follows it
        if records is not None or self._census is None:
            self._census = Census.take(records or (), supervisor.policy.classes)
        census = self._census
        self.metrics.after_poll(result, census, last_success=supervisor.last_success,
                                consecutive_failures=supervisor.consecutive_failures)
        self.health.poll_done(result)
        self.systemd.poll_done(result, census, supervisor.clock.now())
        if self.page is not None and records is not None:
            self.page.after_poll(records)

    async def _apply(self, old: Settings, new: Settings) -> None:
        """Apply reloaded settings (the daemon holds the next poll back meanwhile): the
        runtime built again from them, the records of sessions no longer configured
        dropped, the new runtime swapped in, and the old client closed once no poll uses
        it."""
        previous = self.runtime
        runtime = rebuild(previous, new)
        try:
            await runtime.forget_unconfigured()
        except BaseException:  # nothing was swapped: the old runtime goes on
            await runtime.client.aclose()
            raise
        self.runtime = runtime
        self.metrics.watch_gate(runtime.gate)
        self.daemon.switch(runtime.supervisor, Schedule(
            new.poll_interval, new.shutdown_grace, new.poll_jitter))
        self._retire(previous)
        self.health.unready_after = new.unready_threshold
        self.metrics.per_session = new.metrics_per_session
        if self.page is not None:
            self.page.reload(new)
        if self.configure_logs is not None and (
            (old.log_format, old.log_level) != (new.log_format, new.log_level)
        ):
            self.configure_logs(new)

    async def _send_alerts(self) -> None:
        """The sender's loop, shielded from the daemon's cancelling its background work at
        stop: a message being sent then is finished (and recorded as delivered) by
        ``_finish_alerts``, so that a restart does not send it again."""
        assert self.alerts is not None
        self._sending = asyncio.ensure_future(self.alerts.sender.run(self._stop_sending))
        await asyncio.shield(self._sending)

    async def _finish_alerts(self) -> None:
        """At stop: the round in flight finishes within ``shutdown_grace`` (then it is
        cancelled; its rows stay queued for the next start), then the channels close."""
        assert self.alerts is not None
        self._stop_sending.set()
        sending = self._sending
        if sending is not None and not sending.done():
            done, _ = await asyncio.wait({sending}, timeout=self.daemon.shutdown_grace)
            if not done:
                sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sending
        await self.alerts.aclose()

    def _retire(self, previous: Runtime) -> None:
        """Close the replaced client once no poll uses it: at once, unless a poll that
        outlasted the daemon's wait for it still runs on it."""

        async def close() -> None:
            try:
                await self.daemon.idle()
            finally:
                await previous.client.aclose()

        self._spawn(close())


class WebhookEndpoint:
    """The provider's webhooks, for one service (``supervisor.webhooks``): the endpoint's
    answer, in the listener's callback; the reads it queued, in the daemon's background,
    each through the service's supervisor as it is then (a reload swaps it)."""

    def __init__(self, service: Service, settings: Settings) -> None:
        from supervisor.webhooks.nudges import Nudges  # noqa: PLC0415
        from supervisor.webhooks.receiver import Receiver  # noqa: PLC0415
        from supervisor.webhooks.signature import Checker  # noqa: PLC0415

        hooks = settings.webhooks
        clock = service.runtime.clock
        self.service = service
        self.path = hooks.path
        checker = Checker(hooks.key(), clock, max_skew=hooks.max_skew,
                          allow_from=hooks.allow_from)
        self.nudges = Nudges(self._read, clock, concurrency=hooks.concurrency,
                             queue_max=hooks.queue_max)
        self.receiver = Receiver(checker, self.nudges, clock)
        self.stop = asyncio.Event()
        service.metrics.watch_webhooks(self.receiver.counts, lambda: self.nudges.reads)

    def handle(self, headers: Mapping[str, str], body: bytes, peer: str) -> Reply:
        status, text = self.receiver.handle(headers, body, peer)
        return Reply(status, text)

    async def run(self) -> None:
        """The reads, until the daemon stops (the reads in flight then finish)."""
        await self.nudges.run(self.stop)

    async def _read(self, name: str) -> str | None:
        leadership = self.service.leadership
        if leadership is not None and not leadership.acting():
            return None  # the leader reads it (the provider posts to every replica) or polls
        try:
            return await self.service.runtime.supervisor.nudge(name)
        except LookupError:
            self.receiver.rejected("unknown_session", session=name)
            return None


class StatusPage:
    """The status page's parts (``supervisor.web``), for one service: the application the
    listener hands the page's paths to, the logins, the QR codes' feed. It reads the
    service's runtime as it is at each request (a reload swaps it)."""

    def __init__(self, service: Service, credentials: Credentials) -> None:
        # Imported here: a daemon without the page loads none of it (nor Starlette).
        from supervisor.runtime.qr import gated_qr  # noqa: PLC0415
        from supervisor.web.app import create_app  # noqa: PLC0415
        from supervisor.web.auth import LoginLimiter, Sessions  # noqa: PLC0415
        from supervisor.web.board import Board  # noqa: PLC0415
        from supervisor.web.qr import QrFeed  # noqa: PLC0415

        clock = service.runtime.clock
        self.service = service
        self.credentials = credentials
        self.sessions: Sessions = Sessions(clock)
        # A copy is kept QR_COPY seconds: with the page's fetch every 10 s, the code shown
        # is at most 15 s old, less than WhatsApp's 20 between two codes.
        self.qr: QrFeed = QrFeed(gated_qr(lambda: service.runtime), clock, refresh=QR_COPY)
        board = Board(lambda: service.runtime.store,  # type: ignore[arg-type, return-value]
                      lambda: service.runtime.supervisor.policy.classes, clock,
                      last_seen=lambda: service.runtime.supervisor.last_success)
        metrics = None
        if service.runtime.settings.http_metrics_auth:
            def metrics() -> tuple[bytes, str]:
                return service.metrics.render(), CONTENT_TYPE
        self.app = create_app(board, service.operator, self.qr, lambda: self.credentials,
                              self.sessions, LoginLimiter(clock), clock, metrics=metrics)

    def after_poll(self, records: Iterable[Record]) -> None:
        """Drop the QR codes of the sessions that no longer need one."""
        if not len(self.qr):
            return
        for record in records:
            if record.phase is not Phase.NEEDS_PERSON:
                self.qr.forget(record.session_id)

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the auth file read again. A file that cannot be used keeps the logins
        in force (``http.auth_reload_failed``, with the one-line reason); a good one
        replaces them, and ends the logins of names gone or of tokens changed."""
        try:
            credentials = read_credentials(settings, self.service.runtime.secrets)
        except PageError as exc:
            log.error(ev.HTTP_AUTH_RELOAD_FAILED, problem=str(exc), kept="previous")
            return
        self.credentials = credentials
        ended = self.sessions.retain(credentials)
        log.info(ev.HTTP_AUTH_RELOADED, names=len(credentials), logins_ended=ended)


def read_credentials(settings: Settings, secrets: Secrets | None) -> Credentials:
    """The logins of ``http_auth_file``, read now; PageError (one line, naming the setting
    and its source) when it cannot be used. Its tokens join ``secrets``."""
    from supervisor.web.auth import load_credentials  # noqa: PLC0415

    path = settings.http_auth_file
    assert path is not None
    try:
        return load_credentials(path, secrets=secrets)
    except ValueError as exc:
        raise PageError(f"http_auth_file: {exc} ({settings.source_of('http_auth_file', long=True)})"
                        ) from None


def web_missing(settings: Settings) -> str | None:
    """The problem, in one line naming the setting and its source, when ``http_auth_file``
    is set and the 'web' extra is not installed; else None. Looked up without importing
    it."""
    if settings.http_auth_file is None:
        return None
    import importlib.util  # noqa: PLC0415

    absent = [name for name in ("starlette", "jinja2", "multipart", "segno")
              if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return (f"http_auth_file: the status page needs the 'web' extra (pip install "
            f"'wasend-supervisor[web]'), and {', '.join(absent)} is not installed "
            f"({settings.source_of('http_auth_file', long=True)})")


def _telling(load: Callable[[], Settings], told: Callable[[Settings], None],
             ) -> Callable[[], Settings]:
    """``load``, handing ``told`` each valid result as loaded (a reload keeps the settings
    that need a restart, so ``apply`` sees the old ones)."""

    def loaded() -> Settings:
        settings = load()
        told(settings)
        return settings

    return loaded


def _json(verdict: Verdict) -> Reply:
    body = json.dumps(verdict.body, separators=(",", ":")).encode("utf-8") + b"\n"
    return Reply(200 if verdict.ok else 503, body, "application/json")

"""The simulator: sessions, faults, admission and the request log behind one lock.

:class:`Simulator` is what the HTTP app calls (the ``api_*`` methods, :meth:`admit`
and :meth:`finish`) and what tests, the demo and the benchmarks drive directly
(:meth:`set_status`, :meth:`update_faults`, :meth:`requests`, :meth:`stats`, …).
Every method is thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, Literal

from . import render
from .clock import Clock, SystemClock
from .faults import Faults, ListShape, OutageMode, WebhookSettings
from .gate import Admission, Gate
from .reqlog import DEFAULT_LOG_SIZE, RequestLog, RequestRecord
from .scenario import (
    DEFAULT_SESSION_COUNT,
    MAX_SESSIONS,
    Scenario,
    ScenarioError,
    SessionSpec,
    merge_faults,
    merge_webhooks,
    parse_faults,
    parse_session_specs,
    parse_status,
)
from .state import INF, SessionState, SessionTable, UnknownSession, Verdict, specs_for
from .statuses import CREATED, SCAN_QR_CODE, WORKING, is_well_formed
from .webhooks import Outgoing, WebhookHub, WebhookRecord, event_id

Action = Literal["start", "stop", "restart"]
_QR_BYTES: Final = 30 + 3 * 32  # the ref, then three 32-byte keys


def made_up_qr(salt: bytes, session_id: str, since: float, index: int) -> str:
    """A made-up pairing string shaped like WhatsApp's: ``2@`` and a ref, then three
    base64 keys, comma-separated. The ``index``-th code since the session entered
    ``SCAN_QR_CODE`` at ``since``; ``salt`` (one per simulator) makes it unguessable."""
    raw = hashlib.shake_256(salt + f"{session_id}\0{since!r}\0{index}".encode()).digest(_QR_BYTES)
    ref = base64.b64encode(raw[:30]).decode()
    keys = [base64.b64encode(raw[30 + 32 * i : 62 + 32 * i]).decode() for i in range(3)]
    return "2@" + ",".join([ref, *keys])


def _plain(value: Any) -> Any:
    """Turn fault dataclasses (and containers of them) into the JSON form."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


class Simulator:
    """In-memory WASend: sessions and their life cycle, faults, and the request log.

    ``sessions`` (default: the scenario's ``session_count``, else 10) sessions named
    ``sess-0001``… are created, then the scenario's explicit sessions. ``api_key``
    defaults to a random one. ``clock`` defaults to the system clock. ``webhook_url`` and
    ``webhook_hmac_key``, when given, win over the scenario's (see :meth:`update_webhooks`).
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        sessions: int | None = None,
        api_key: str | None = None,
        clock: Clock | None = None,
        log_size: int = DEFAULT_LOG_SIZE,
        webhook_url: str | None = None,
        webhook_hmac_key: str | None = None,
    ) -> None:
        self._scenario = scenario if scenario is not None else Scenario()
        overrides = {k: v for k, v in (("webhook_url", webhook_url),
                                       ("webhook_hmac_key", webhook_hmac_key)) if v is not None}
        self._webhook_start: Final[WebhookSettings] = merge_webhooks(
            self._scenario.webhooks, overrides)
        count = sessions if sessions is not None else self._scenario.session_count
        self._count = DEFAULT_SESSION_COUNT if count is None else count
        if not 0 <= self._count <= MAX_SESSIONS:
            raise ValueError(f"sessions must be between 0 and {MAX_SESSIONS}")
        self.api_key: Final[str] = api_key or secrets.token_urlsafe(24)
        if not self.api_key.isprintable() or " " in self.api_key:
            raise ValueError("the API key must be printable and contain no spaces")
        self.clock: Final[Clock] = clock if clock is not None else SystemClock()
        self._lock = threading.RLock()
        self._log = RequestLog(log_size)
        self._in_flight = 0
        self._gate = Gate(self.api_key)
        self._qr_salt = secrets.token_bytes(16)
        self._rng = random.Random()
        self._t0 = 0.0
        self._table = SessionTable(Faults(), self._rng, 0.0)
        self._hooks = WebhookHub(self.clock, self._webhook_start)
        self._timer_wake: Callable[[], None] | None = None
        self.reset()

    # -- time -----------------------------------------------------------------------

    def _times(self) -> tuple[float, float]:
        """(monotonic now, wall - monotonic offset)."""
        now = self.clock.monotonic()
        return now, self.clock.now() - now

    def uptime(self) -> float:
        """Seconds since the simulator started (or was last reset): the base of ``at``."""
        with self._lock:
            return self.clock.monotonic() - self._t0

    # -- whole-state operations -------------------------------------------------------

    def reset(self) -> None:
        """Back to the scenario's start: sessions, faults, seed, clock base, log, limits."""
        with self._lock:
            now, offset = self._times()
            self._t0 = now
            faults = self._resolve(self._scenario.faults, now)
            self._rng.seed(faults.seed)
            self._table = SessionTable(faults, self._rng, now)
            scenario = self._scenario
            for spec in specs_for(self._count, scenario.initial_status, scenario.sessions):
                self._table.add(spec, now, offset)
            self._gate.clear()
            self._log.clear()
            self._hooks.reset(self._webhook_start)
            self._hook_table()

    def _hook_table(self) -> None:
        """Have the session table report status changes (and keep its due times for the
        background timer) while webhooks are on; nothing of the kind while they are off."""
        on = self._hooks.enabled
        table = self._table
        table.on_change = self._status_changed if on else None
        table.on_sooner = self._timer_wake
        if table.track_due != on:
            table.set_tracking(on)
        wake = self._timer_wake
        if wake is not None:
            wake()

    def _resolve(self, faults: Faults, now: float) -> Faults:
        """Give an outage without ``at`` the current uptime."""
        if faults.outage is not None and faults.outage.at is None:
            return replace(faults, outage=replace(faults.outage, at=now - self._t0))
        return faults

    # -- faults -------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        """The current faults and options (an immutable value)."""
        with self._lock:
            return self._table.faults

    def faults_dict(self) -> dict[str, Any]:
        """The current faults as JSON (what ``GET /_simulator/faults`` answers)."""
        return self.faults.to_dict()

    def update_faults(self, **changes: Any) -> Faults:
        """Change some faults or options; same keys and merge rules as ``PATCH``.

        Sections are merged key by key, e.g. ``update_faults(rate_limit={"burst": 3})``
        keeps the rest of the rate limit; values may also be the fault dataclasses.
        Raises :class:`ScenarioError` naming a bad key.
        """
        patch = {key: _plain(value) for key, value in changes.items()}
        with self._lock:
            new = merge_faults(self._table.faults, patch)
            return self._apply(new, reseed="seed" in patch)

    def replace_faults(self, **settings: Any) -> Faults:
        """Replace every fault and option: what is not given takes its default (``PUT``)."""
        data = {key: _plain(value) for key, value in settings.items()}
        with self._lock:
            return self._apply(parse_faults(data), reseed=True)

    def _apply(self, new: Faults, *, reseed: bool) -> Faults:
        now, offset = self._times()
        new = self._resolve(new, now)
        if reseed:
            self._rng.seed(new.seed)
        self._table.configure(new, now, offset, redraw=reseed)
        return new

    def start_outage(self, duration: float, mode: OutageMode = "503") -> Faults:
        """Start an outage now, for ``duration`` seconds."""
        return self.update_faults(outage={"duration": duration, "mode": mode})

    def end_outage(self) -> Faults:
        return self.update_faults(outage=None)

    def _outage_mode(self, now: float) -> OutageMode | None:
        outage = self._table.faults.outage
        if outage is None or outage.at is None:
            return None
        start = self._t0 + outage.at
        return outage.mode if start <= now < start + outage.duration else None

    def outage_active(self) -> bool:
        with self._lock:
            return self._outage_mode(self.clock.monotonic()) is not None

    def refusing(self) -> bool:
        """Whether a ``refuse`` outage is on: the server must not listen now."""
        with self._lock:
            return self._outage_mode(self.clock.monotonic()) == "refuse"

    # -- sessions (Python and admin API) -------------------------------------------------

    def _session(self, session_id: str) -> SessionState:
        now, offset = self._times()
        return self._table.advance(self._table.get(session_id), now, offset)

    def session_ids(self) -> list[str]:
        with self._lock:
            return list(self._table.sessions)

    def status(self, session_id: str) -> str:
        """The current status (raises :class:`UnknownSession`)."""
        with self._lock:
            return self._session(session_id).status

    def statuses(self) -> dict[str, str]:
        """Every session's current status, by id."""
        with self._lock:
            now, offset = self._times()
            return {s.uid: s.status for s in self._table.advance_all(now, offset)}

    def session(self, session_id: str) -> dict[str, Any]:
        """The raw state of one session, with its API object under ``"object"``."""
        with self._lock:
            s = self._session(session_id)
            raw = self._table.raw(s, self.clock.monotonic())
            raw["object"] = json.loads(render.flat(s))
            return raw

    def session_object(self, session_id: str) -> dict[str, Any]:
        """The Session object the API would answer for ``GET /sessions/{id}``."""
        with self._lock:
            return dict(json.loads(render.flat(self._session(session_id))))

    def set_status(self, session_id: str, status: str) -> None:
        """Put a session in ``status`` at once; any pending start is dropped.

        Any well-formed status is stored as given (case included), known or not.
        """
        if not is_well_formed(status):
            raise ValueError(f"malformed status {status!r}")
        with self._lock:
            now, offset = self._times()
            self._table.set_status(self._table.get(session_id), status, now, offset)

    def set_zombie(self, session_id: str, zombie: bool) -> None:
        """Have the engine report the session not connected (``zombie``) while its status
        stays as it is, or connected again; any change of status ends it."""
        with self._lock:
            now, offset = self._times()
            self._table.set_zombie(self._table.get(session_id), zombie, now, offset)

    def set_outcome(self, session_id: str, outcome: str | Sequence[str] | None) -> None:
        """What the session's next starts lead to (a sequence; its last value repeats)."""
        spec: dict[str, Any] = {"id": session_id}
        if outcome is not None:
            spec["outcome"] = outcome if isinstance(outcome, str) else list(outcome)
        parsed = parse_session_specs([spec], "outcome")[0].outcome
        with self._lock:
            self._table.set_outcome(self._session(session_id), parsed)

    def add_sessions(
        self,
        count: int = 0,
        *,
        status: str = WORKING,
        specs: Iterable[SessionSpec | Mapping[str, Any]] = (),
    ) -> list[str]:
        """Add ``count`` generated sessions in ``status``, then the ``specs`` given;
        returns the new ids. Raises :class:`ScenarioError` on a bad spec or a taken id."""
        generated_status = parse_status(status)
        given = list(specs)
        mappings = [g for g in given if not isinstance(g, SessionSpec)]
        parsed = iter(parse_session_specs(mappings, "sessions", generated_status))
        ready = [g if isinstance(g, SessionSpec) else next(parsed) for g in given]
        explicit = {spec.id for spec in ready}
        if len(explicit) < len(ready):
            raise ScenarioError("sessions: the same id is given twice")
        with self._lock:
            if count < 0 or len(self._table.sessions) + count + len(ready) > MAX_SESSIONS:
                raise ScenarioError(f"count: must be between 0 and {MAX_SESSIONS} sessions in all")
            for spec in ready:
                if spec.id in self._table.sessions:
                    raise ScenarioError(f"sessions: id {spec.id!r} is taken")
            now, offset = self._times()
            generated: list[SessionSpec] = []
            while len(generated) < count:
                uid = self._table.next_generated_id()
                if uid not in explicit:
                    generated.append(SessionSpec(id=uid, status=generated_status))
            return [self._table.add(spec, now, offset).uid for spec in (*generated, *ready)]

    # -- the HTTP API (used by the app) ----------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the API key."""
        return self._gate.authorized(authorization)

    def admit(self, method: str, path: str, authorization: str | None) -> Admission:
        """Decide how an arriving API request is answered (see :mod:`.gate`)."""
        with self._lock:
            now = self.clock.monotonic()
            faults = self._table.faults
            admission, used_burst = self._gate.admit(
                faults,
                self._rng,
                method=method,
                path=path,
                authorization=authorization,
                now=now,
                wall=self.clock.now(),
                outage=self._outage_mode(now) is not None,
            )
            self._in_flight += 1
            if used_burst:
                fewer = replace(faults.rate_limit, burst=faults.rate_limit.burst - 1)
                self._table.faults = replace(faults, rate_limit=fewer)
            return admission

    def finish(self, admission: Admission, status: int | None, agent: str = "") -> RequestRecord:
        """Log an API request once answered (``status`` None: the client went away;
        ``agent``: its User-Agent)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            return self._log.append(
                wall=admission.wall,
                monotonic=admission.arrived,
                method=admission.method,
                path=admission.path,
                kind=admission.kind,
                session=admission.session_id,
                status=status,
                early=admission.early,
                fault=admission.fault,
                duration=max(0.0, self.clock.monotonic() - admission.arrived),
                agent=agent,
            )

    def api_list(self, shape: ListShape | None = None) -> bytes:
        """The body of ``GET /sessions`` in ``shape`` (default: the configured one)."""
        with self._lock:
            now, offset = self._times()
            shape = shape or self._table.faults.list_shape
            one: Callable[[SessionState], str] = render.nested if shape == "nested" else render.flat
            advance = self._table.advance
            parts = []
            for s in self._table.sessions.values():
                if s.next_at <= now:
                    advance(s, now, offset)
                parts.append(one(s))
        items = ",".join(parts)
        text = f"[{items}]" if shape == "array" else f'{{"sessions":[{items}]}}'
        return text.encode()

    def api_get(self, session_id: str) -> tuple[int, bytes]:
        with self._lock:
            try:
                return 200, render.flat(self._session(session_id)).encode()
            except UnknownSession:
                return 404, render.error_body(404, f"Session {session_id} not found")

    def api_action(self, session_id: str, action: Action) -> tuple[int, bytes]:
        """start, stop or restart; success answers ``post_status`` and the Session."""
        with self._lock:
            try:
                s = self._table.get(session_id)
            except UnknownSession:
                return 404, render.error_body(404, f"Session {session_id} not found")
            now, offset = self._times()
            verdict: Verdict = getattr(self._table, action)(s, now, offset)
            if verdict.code != 200:
                return verdict.code, render.error_body(verdict.code, verdict.message)
            return self._table.faults.post_status, render.flat(s).encode()

    def api_qr(self, session_id: str) -> tuple[int, bytes]:
        """``GET /sessions/{id}/auth/qr`` and ``/sessions/{id}/qr``: the current code of a
        session in ``SCAN_QR_CODE``; 422 in any other status (as the engine answers), 404
        for an unknown id."""
        with self._lock:
            now, offset = self._times()
            try:
                s = self._table.advance(self._table.get(session_id), now, offset)
            except UnknownSession:
                return 404, render.error_body(404, f"Session {session_id} not found")
            code = self._qr(s, now)
            if code is None:
                message = (f"Can get QR code only in {SCAN_QR_CODE} status. "
                           f"The current status is {s.status}")
                return 422, render.error_body(422, message)
            return 200, render.dumps({"data": code[0]}).encode()

    def qr_payload(self, session_id: str) -> str | None:
        """The QR payload the API answers now for the session (None: not in
        ``SCAN_QR_CODE``, the API answers 422). Raises :class:`UnknownSession`."""
        with self._lock:
            now, offset = self._times()
            code = self._qr(self._table.advance(self._table.get(session_id), now, offset), now)
            return None if code is None else code[0]

    def qr_state(self, session_id: str) -> dict[str, Any]:
        """What ``GET /_simulator/sessions/{id}/qr`` answers: the id, the status, the
        payload now (``data``, None outside ``SCAN_QR_CODE``) and the seconds until the
        next one (``rotates_in``)."""
        with self._lock:
            now, offset = self._times()
            s = self._table.advance(self._table.get(session_id), now, offset)
            code = self._qr(s, now)
            return {"id": s.uid, "status": s.status, "data": None if code is None else code[0],
                    "rotates_in": None if code is None else round(code[1], 6)}

    def _qr(self, s: SessionState, now: float) -> tuple[str, float] | None:
        """The session's code now and the seconds it has left, or None: it has none (not
        in ``SCAN_QR_CODE``). A new one every ``qr_rotate`` seconds since it entered that
        status."""
        if s.status.upper() != SCAN_QR_CODE:
            return None
        rotate = self._table.faults.qr_rotate
        age = max(0.0, now - s.entered_at)
        index = int(age // rotate)
        left = rotate * (index + 1) - age
        return made_up_qr(self._qr_salt, s.uid, s.entered_at, index), left

    def api_create(self, payload: object) -> tuple[int, bytes]:
        """``POST /sessions``: a new session in ``CREATED``."""
        if not isinstance(payload, Mapping):
            return 400, render.error_body(400, "the body must be a JSON object")
        fields: dict[str, tuple[type, bool]] = {
            "sessionName": (str, True),
            "phoneNumber": (str, True),
            "enableAccountProtection": (bool, False),
            "enableMessageLogging": (bool, False),
            "enableWebhook": (bool, False),
            "webhookUrl": (str, False),
        }
        for key, (kind, required) in fields.items():
            value = payload.get(key)
            if (value is None and required) or (value is not None and not isinstance(value, kind)):
                return 400, render.error_body(400, f"{key} must be a {kind.__name__}")
        with self._lock:
            now, offset = self._times()
            spec = SessionSpec(
                id=self._table.next_generated_id(),
                status=CREATED,
                session_name=payload["sessionName"],
                phone_number=payload["phoneNumber"],
                enable_account_protection=bool(payload.get("enableAccountProtection", False)),
                enable_message_logging=bool(payload.get("enableMessageLogging", False)),
                enable_webhook=bool(payload.get("enableWebhook", False)),
                webhook_url=payload.get("webhookUrl"),
            )
            s = self._table.add(spec, now, offset)
            return self._table.faults.post_status, render.flat(s).encode()

    def api_delete(self, session_id: str) -> tuple[int, bytes]:
        with self._lock:
            try:
                self._table.remove(session_id)
            except UnknownSession:
                return 404, render.error_body(404, f"Session {session_id} not found")
            return 200, b""

    # -- webhooks -------------------------------------------------------------------------

    @property
    def webhook_settings(self) -> WebhookSettings:
        """Where and how webhooks are sent now (an immutable value)."""
        return self._hooks.settings

    def update_webhooks(self, **changes: Any) -> WebhookSettings:
        """Change some webhook settings, named as the scenario's keys (``webhook_url``,
        ``webhook_hmac_key``, ``webhook_hmac_algorithm``, ``webhook_legacy``,
        ``webhook_retries``); None returns one to its default (no URL: none are sent).
        Raises :class:`ScenarioError` naming a bad key."""
        with self._lock:
            new = merge_webhooks(self._hooks.settings, changes)
            if new.url is not None and not self._hooks.enabled:
                now, offset = self._times()  # changes before now are not announced
                for _ in self._table.advance_all(now, offset):
                    pass
            self._hooks.configure(new)
            self._hook_table()
            return new

    def _status_changed(self, s: SessionState) -> None:
        """A session's status changed (under the lock): make its event."""
        hooks = self._hooks
        ms = s.changed_ms
        evt = event_id(ms)
        body = hooks.body(evt=evt, ms=ms, session=s.name, status=s.status, statuses=s.history,
                          phone=s.phone_number, push_name=s.session_name)
        item = Outgoing(evt, s.name, s.status, body, hooks.generation)
        hooks.emit(item, self._table.faults.webhook_faults, self._rng.random)

    def webhooks(self, after: int | None = None) -> list[WebhookRecord]:
        """The webhook log: every delivery attempt (and dropped event), oldest first."""
        return self._hooks.records(after)

    def clear_webhooks(self) -> None:
        """Clear the webhook log and its counters."""
        self._hooks.clear()

    def webhook_stats(self) -> dict[str, Any]:
        """Counters of events and deliveries since the last clear."""
        return self._hooks.counters()

    def webhook_burst(
        self,
        count: int,
        sessions: Sequence[str] | None = None,
        status: str = WORKING,
        bad_signature: bool = False,
    ) -> int:
        """Queue ``count`` events at once, round robin over ``sessions`` (default: every
        session), each saying ``status``, without changing any status and without faults
        (``bad_signature`` signs them all wrongly). Returns how many were queued."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ScenarioError("count: must be a whole number >= 0")
        if not is_well_formed(status):
            raise ScenarioError(f"status: malformed status {status!r}")
        with self._lock:
            if not self._hooks.enabled:
                raise ScenarioError("webhook_url: no webhook URL is set")
            ids = list(self._table.sessions) if sessions is None else list(sessions)
            targets = [self._table.get(uid) for uid in ids]
            if count and not targets:
                raise ScenarioError("sessions: no session to send events for")
            ms = round(self.clock.now() * 1000)
            hooks = self._hooks
            generation = hooks.generation

            def items() -> Iterable[Outgoing]:
                for n in range(count):
                    s = targets[n % len(targets)]
                    evt = event_id(ms)
                    body = hooks.body(evt=evt, ms=ms, session=s.name, status=status,
                                      statuses=((status, ms),), phone=s.phone_number,
                                      push_name=s.session_name)
                    yield Outgoing(evt, s.name, status, body, generation,
                                   "bad_signature" if bad_signature else None, bad_signature)

            return hooks.burst(items())

    @property
    def webhook_hub(self) -> WebhookHub:
        """What the server's dispatcher sends from."""
        return self._hooks

    def attach_timer(self, wake: Callable[[], None] | None) -> None:
        """The server's background timer: ``wake`` (called from any thread) asks it to
        look again at the earliest due change."""
        with self._lock:
            self._timer_wake = wake
            self._table.on_sooner = wake

    def advance_due(self) -> float | None:
        """Apply the changes due by now; seconds until the next one, or None when
        webhooks are off (then nothing advances but through requests, as before)."""
        with self._lock:
            if not self._table.track_due:
                return None
            now, offset = self._times()
            at = self._table.advance_due(now, offset)
            return None if at == INF else at - now

    # -- the request log ----------------------------------------------------------------

    def requests(self, since: float | None = None, after: int | None = None) -> list[RequestRecord]:
        """Logged API requests that arrived at or after ``since`` (monotonic seconds)
        and were logged after sequence number ``after``, oldest first."""
        with self._lock:
            return self._log.records(since, after)

    def reset_log(self) -> None:
        """Clear the request log and its counters."""
        with self._lock:
            self._log.clear()

    def stats(self) -> dict[str, Any]:
        """Request counters, sessions by status, uptime and the live fault state."""
        with self._lock:
            now, offset = self._times()
            by_status = Counter(s.status for s in self._table.advance_all(now, offset))
            faults = self._table.faults
            deadline = self._gate.deadline()
            return {
                **self._log.counters(),
                "in_flight": self._in_flight,
                "sessions": len(self._table.sessions),
                "sessions_by_status": dict(sorted(by_status.items())),
                "uptime": now - self._t0,
                "outage": self._outage_mode(now),
                "burst_remaining": faults.rate_limit.burst,
                "webhooks": self._hooks.counters(),
                "retry_after_remaining": (
                    None if deadline is None or deadline <= now else deadline - now
                ),
            }

"""Prometheus metrics for ``/metrics``, in a registry of their own.

Fed from three hooks, never from log lines:

* the client's ``observer`` (every HTTP request: call, status, duration);
* the supervisor's event observers (every event of the decision core: restart outcomes,
  give-ups, needs-a-person);
* the daemon's poll listener (poll outcome and duration, and a ``Census`` of the store's
  records: sessions by class and by phase).

The rate gate's own counters (429s received, seconds paused) and the HTTP listener's
(connections open, connections reset or refused by reason) are read when scraped.
Per-session series exist only with ``metrics_per_session = true``. Every name starts with
``wasend_supervisor_``; see docs/operations.md for the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from supervisor.domain import events as ev
from supervisor.domain.models import Event, Phase, StatusClass
from supervisor.ops.census import Census

if TYPE_CHECKING:
    from supervisor.api.ratelimit import RateGate
    from supervisor.ops.listener import HttpListener
    from supervisor.runtime.cycle import PollResult

PREFIX = "wasend_supervisor_"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

RESTART_OUTCOMES = {
    ev.RESTART_SUCCEEDED: "succeeded",
    ev.RESTART_FAILED: "failed",
    ev.RESTART_CONFLICT: "conflict",
    ev.RESTART_DEFERRED: "deferred",
}
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    def __init__(self, *, per_session: bool = False, alerts: bool = False) -> None:
        """``alerts``: alerts are configured; without, ``/metrics`` shows none of their
        series (nor their HELP lines)."""
        self.per_session = per_session
        self.registry = CollectorRegistry()
        r = self.registry
        self.restarts = Counter(
            PREFIX + "restarts", "Restart attempts by outcome.", ["outcome"], registry=r)
        self.restart_requests = Counter(
            PREFIX + "restart_requests", "Restart requests about to be sent.", registry=r)
        self.gave_up = Counter(
            PREFIX + "gave_up", "Times a session was given up on (session.gave_up).",
            registry=r)
        self.needs_person = Counter(
            PREFIX + "needs_person",
            "Times a session entered a needs-a-person status (session.needs_person).",
            registry=r)
        self.polls = Counter(
            PREFIX + "polls", "Poll cycles by outcome (ok, failed, skipped).", ["outcome"],
            registry=r)
        self.poll_duration = Histogram(
            PREFIX + "poll_duration_seconds", "Duration of poll cycles that ran.",
            buckets=POLL_BUCKETS, registry=r)
        self.api_duration = Histogram(
            PREFIX + "api_request_duration_seconds",
            "WASend API requests by call and HTTP status (status 'none': no answer).",
            ["call", "status"], buckets=API_BUCKETS, registry=r)
        self.last_success = Gauge(
            PREFIX + "last_successful_poll_timestamp_seconds",
            "Unix time of the end of the last successful poll (0: none yet).", registry=r)
        self.reloads = Counter(
            PREFIX + "config_reloads", "Configuration reloads (SIGHUP) by outcome.",
            ["outcome"], registry=r)
        for outcome in RESTART_OUTCOMES.values():
            self.restarts.labels(outcome)
        for outcome in ("ok", "failed", "skipped"):
            self.polls.labels(outcome)
        for outcome in ("ok", "failed"):
            self.reloads.labels(outcome)
        alerting = r if alerts else None  # an unregistered metric is never rendered
        self.alerts = Counter(
            PREFIX + "alerts",
            "Alert episodes opened and resolved, and messages sent and failed, by kind and "
            "outcome.", ["kind", "outcome"], registry=alerting)
        self.alerts_dropped = Counter(
            PREFIX + "alerts_dropped",
            "Queued alerts dropped unsent, by reason (max_age, queue_full).", ["reason"],
            registry=alerting)
        self.alert_episodes_open = Gauge(
            PREFIX + "alert_episodes_open", "Alert episodes open now, by kind.", ["kind"],
            registry=alerting)
        self._gate: RateGate | None = None
        self._listener: HttpListener | None = None
        self._webhooks: tuple[Mapping[str, int], Callable[[], int]] | None = None
        self._leadership: Callable[[], Mapping[str, Any]] | None = None
        self._census: Census | None = None
        self._consecutive_failures = 0
        r.register(_StateCollector(self))

    # --- hooks ---

    def watch_gate(self, gate: RateGate) -> None:
        self._gate = gate

    def watch_listener(self, listener: HttpListener) -> None:
        self._listener = listener

    def watch_webhooks(self, counts: Mapping[str, int], reads: Callable[[], int]) -> None:
        """The webhook endpoint's outcomes (``counts``, by outcome) and the session reads
        they made (``reads()``): only with webhooks on, so ``/metrics`` without them is as
        before."""
        self._webhooks = (counts, reads)

    def watch_leadership(self, view: Callable[[], Mapping[str, Any]]) -> None:
        """This replica's role (``Leadership.view``): only with replicas (``ha``)."""
        self._leadership = view

    def observe_request(self, call: str, http_status: int | None, seconds: float) -> None:
        status = "none" if http_status is None else str(http_status)
        self.api_duration.labels(call or "other", status).observe(max(0.0, seconds))

    def observe_event(self, event: Event) -> None:
        outcome = RESTART_OUTCOMES.get(event.name)
        if outcome is not None:
            self.restarts.labels(outcome).inc()
        elif event.name == ev.RESTART_REQUESTED:
            self.restart_requests.inc()
        elif event.name == ev.SESSION_GAVE_UP:
            self.gave_up.inc()
        elif event.name == ev.SESSION_NEEDS_PERSON:
            self.needs_person.inc()

    def after_poll(
        self,
        result: PollResult,
        census: Census,
        *,
        last_success: float | None,
        consecutive_failures: int,
    ) -> None:
        outcome = "ok" if result.ok else "skipped" if result.skipped else "failed"
        self.polls.labels(outcome).inc()
        if not result.skipped:
            self.poll_duration.observe(max(0.0, result.duration))
        if last_success is not None:
            self.last_success.set(last_success)
        self._census = census
        self._consecutive_failures = consecutive_failures

    def alerted(self, kind: str, outcome: str, count: int = 1) -> None:
        """An alert episode ``opened``/``resolved``, or a message ``sent``/``failed``."""
        self.alerts.labels(kind, outcome).inc(count)

    def alerts_were_dropped(self, reason: str, count: int) -> None:
        self.alerts_dropped.labels(reason).inc(count)

    def episodes_open(self, counts: Mapping[str, int]) -> None:
        """The open episodes by kind (every kind, zeros included), after a poll."""
        for kind, count in counts.items():
            self.alert_episodes_open.labels(kind).set(count)

    def reloaded(self, ok: bool) -> None:
        self.reloads.labels("ok" if ok else "failed").inc()

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)

    # --- read when scraped ---

    def _state(self) -> Iterator[Metric]:
        census = self._census
        sessions = GaugeMetricFamily(
            PREFIX + "sessions", "Supervised sessions by status class, after the last poll.",
            labels=["class"])
        phases = GaugeMetricFamily(
            PREFIX + "sessions_in_phase", "Supervised sessions by supervision phase.",
            labels=["phase"])
        for klass in StatusClass:
            sessions.add_metric([klass.value], census.by_class[klass] if census else 0)
        for phase in Phase:
            phases.add_metric([phase.value], census.by_phase[phase] if census else 0)
        yield sessions
        yield phases
        yield GaugeMetricFamily(
            PREFIX + "sessions_given_up",
            "Sessions currently given up on (until seen healthy again).",
            value=census.given_up if census else 0)
        yield GaugeMetricFamily(
            PREFIX + "sessions_needing_person",
            "Sessions currently in a needs-a-person status (e.g. SCAN_QR_CODE).",
            value=census.by_phase[Phase.NEEDS_PERSON] if census else 0)
        yield GaugeMetricFamily(
            PREFIX + "consecutive_poll_failures", "Polls failed in a row (0 after a success).",
            value=self._consecutive_failures)
        gate = self._gate
        if gate is not None:
            yield CounterMetricFamily(
                PREFIX + "api_rate_limited", "429 answers received from the API.",
                value=gate.rate_limited_total)
            yield CounterMetricFamily(
                PREFIX + "api_rate_limit_paused_seconds",
                "Seconds requests were held back by a 429's Retry-After (or its fallback).",
                value=gate.paused_seconds_total)
            yield GaugeMetricFamily(
                PREFIX + "api_rate_limit_pause_remaining_seconds",
                "Seconds until requests may be sent again after a 429 (0: not paused).",
                value=gate.paused_for())
        listener = self._listener
        if listener is not None:
            yield GaugeMetricFamily(
                PREFIX + "http_connections", "Connections open on the HTTP listener now.",
                value=listener.connections)
            dropped = CounterMetricFamily(
                PREFIX + "http_connections_dropped",
                "Connections the HTTP listener reset or refused, by reason (evicted: the "
                "oldest idle one, to make room; refused: none was idle; header_timeout, "
                "response_timeout: a deadline passed).",
                labels=["reason"])
            for reason, count in listener.dropped.items():
                dropped.add_metric([reason], count)
            yield dropped
        if self._webhooks is not None:
            counts, reads = self._webhooks
            received = CounterMetricFamily(
                PREFIX + "webhooks",
                "Webhook requests by outcome (accepted, ignored, or why refused: signature, "
                "skew, duplicate, malformed, peer, unknown_session, queue_full).",
                labels=["outcome"])
            for outcome, count in counts.items():
                received.add_metric([outcome], count)
            yield received
            yield CounterMetricFamily(
                PREFIX + "webhook_reads",
                "Sessions read from the API because a webhook spoke of them (coalesced).",
                value=reads())
        if self._leadership is not None:
            view = self._leadership()
            yield GaugeMetricFamily(
                PREFIX + "ha_leader",
                "1 while this replica leads (holds the lease and acts), else 0.",
                value=1 if view["role"] == "leader" else 0)
            yield GaugeMetricFamily(
                PREFIX + "ha_epoch",
                "The lease's epoch as this replica last saw it (0: no holder seen).",
                value=view["epoch"] or 0)
            yield GaugeMetricFamily(
                PREFIX + "ha_stopped",
                "1 while this replica stopped supervising for want of the database.",
                value=1 if view["role"] == "stopped" else 0)
        if self.per_session and census is not None:
            yield from _per_session(census)


def _per_session(census: Census) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        PREFIX + "session_status",
        "1 for each session, labelled with its last status, status class and phase.",
        labels=["session", "status", "class", "phase"])
    healthy = GaugeMetricFamily(
        PREFIX + "session_healthy", "1 if the session's last status is healthy, else 0.",
        labels=["session"])
    for record in census.records:
        klass = Census.class_of(record, census.classes)
        status.add_metric(
            [record.session_id, record.last_status or "", klass.value, record.phase.value], 1)
        healthy.add_metric([record.session_id], 1 if klass is StatusClass.HEALTHY else 0)
    yield status
    yield healthy


class _StateCollector:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._state()

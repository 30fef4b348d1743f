"""The alerts put together, for ``run`` and ``check`` alike, when alerts are configured.

``Alerts.build`` makes, from ``settings.alerts`` and the runtime's state store:

* the episodes' hook (``runtime.alerting.Alerting``): after each poll, what opened and
  what resolved, applied in the store once across processes with one outbox row per
  channel;
* the sender (``alerts.sender.Sender``) of those rows, to the channels (Apprise,
  Alertmanager).

``run`` awaits ``after_poll`` after each poll and runs ``sender.run`` in the background
(woken when a poll queued something), so delivery never holds the poll loop. ``check``
awaits ``after_poll`` after its polls, then ``send_queued``: one round that sends what
is due at once, without a grouping window (its one pass queued everything together), and
the open episodes posted again to Alertmanager (which resolves by itself an alert that
is not), unless a daemon is running on the same state file, which does both instead (two
senders on one outbox would deliver twice).

The metrics (``ops.metrics.Metrics``), when given, count episodes and deliveries and show
the open episodes by kind.

Imported only when alerts are configured: a ``check`` without alerts loads none of this.
"""

from __future__ import annotations

from supervisor.alerts import build as channels
from supervisor.alerts.sender import Delivery, Sender
from supervisor.clock import Clock
from supervisor.config.model import Settings
from supervisor.domain.episodes import Change, Episode, Kind, Transition
from supervisor.domain.secrets import Secrets
from supervisor.ops.metrics import Metrics
from supervisor.runtime.alerting import Alerting
from supervisor.runtime.cycle import PollResult, Supervisor
from supervisor.state.report import daemon_alive
from supervisor.state.store import StateError, Store

__all__ = ["Alerts"]


class Alerts:
    """The episodes' hook and the sender for one process (see the module)."""

    def __init__(self, alerting: Alerting, sender: Sender, store: Store,
                 metrics: Metrics | None = None) -> None:
        self.alerting = alerting
        self.sender = sender
        self.store = store
        self.metrics = metrics
        self._stopped: Episode | None = None  # supervision stopped, as sent

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        clock: Clock,
        secrets: Secrets,
        *,
        metrics: Metrics | None = None,
        check: bool = False,
    ) -> Alerts:
        alerts = settings.alerts
        alerting = Alerting(store, channels.channel_ids(alerts),
                            unreachable_after=alerts.unreachable_after, clock=clock)
        sender = channels.sender(
            alerts, store, clock, secrets=secrets,
            group_window=0.0 if check else None,
            send_timeout=settings.request_timeout if check else None,
            open_episodes=store.open_episodes,
        )
        made = cls(alerting, sender, store, metrics)
        if metrics is not None:
            sender.observers.append(made._delivered)
        return made

    async def after_poll(self, supervisor: Supervisor, result: PollResult) -> list[Transition]:
        """The episodes reconciled with what the poll left; the sender woken if any
        changed; the metrics told."""
        applied = await self.alerting.after_poll(supervisor, result)
        if applied:
            self.sender.wake()
        if self.metrics is not None:
            for transition in applied:
                self.metrics.alerted(transition.episode.kind.value, transition.change.value)
            counts = self.alerting.open_counts
            self.metrics.episodes_open({kind.value: n for kind, n in counts.items()})
        return applied

    async def send_queued(self, now: float) -> bool:
        """``check``: one round of sending, then the open episodes posted again to the
        channels that want it (Alertmanager resolves an alert nobody posts again), unless
        a daemon on the file does both instead. Whether this process sent (False: a
        daemon was running, or the file unusable)."""
        try:
            beats = await self.store.run(self.store.heartbeats)
        except StateError:
            return False
        if any(beat.kind == "run" and daemon_alive(beat, now) for beat in beats):
            return False
        try:
            await self.sender.run_once(now)
            await self.sender.refresh(now)
        except StateError:
            return False
        return True

    async def supervision_stopped(self, replica: str, problem: str, now: float) -> None:
        """This leading replica stopped for want of its database: said at once, without
        the outbox (which is in that database), to every channel routed the kind."""
        episode = Episode(Kind.SUPERVISION_STOPPED, "", now, session_name=replica,
                          detail=problem)
        self._stopped = episode
        await self.sender.send_now(Transition(Change.OPENED, episode, now))

    async def supervision_resumed(self, now: float) -> None:
        """It reaches the database again: the resolution of what ``supervision_stopped``
        said (nothing if it said nothing)."""
        episode, self._stopped = self._stopped, None
        if episode is not None:
            await self.sender.send_now(Transition(Change.RESOLVED, episode, now))

    def reloaded(self, settings: Settings) -> None:
        """A reload (SIGHUP) loaded ``settings``: the alerts in force stay as they are
        (their settings take effect at the next start), but a URLs file others can read
        is warned about, as at start and as the key file is."""
        channels.warn_urls_file_exposure(settings.alerts)

    async def aclose(self) -> None:
        await channels.aclose(self.sender.channels)

    def _delivered(self, delivery: Delivery) -> None:
        metrics = self.metrics
        assert metrics is not None
        if delivery.outcome == "dropped":
            metrics.alerts_were_dropped(delivery.reason, delivery.count)
        elif delivery.kind is not None:
            metrics.alerted(delivery.kind.value, delivery.outcome)


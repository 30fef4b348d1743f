"""Every log event name, in one place: the names are part of the product (alerting and
grep rely on them; the README lists each), so code refers to them here and a test holds
this list and the README's event tables to each other."""

from __future__ import annotations

from typing import Final

# alert.*
ALERT_CLAIMED_ELSEWHERE: Final = "alert.claimed_elsewhere"
ALERT_DROPPED: Final = "alert.dropped"
ALERT_FAILED: Final = "alert.failed"
ALERT_OPENED: Final = "alert.opened"
ALERT_RESOLVED: Final = "alert.resolved"
ALERT_SENT: Final = "alert.sent"
ALERT_URLS_FILE_PERMISSIONS: Final = "alert.urls_file_permissions"

# api.*
API_AUTH_FAILED: Final = "api.auth_failed"
API_AUTH_RESTORED: Final = "api.auth_restored"
API_KEY_FILE_PERMISSIONS: Final = "api.key_file_permissions"
API_KEY_UNREADABLE: Final = "api.key_unreadable"
API_OBSERVER_FAILED: Final = "api.observer_failed"
API_PAUSE_ADOPTED: Final = "api.pause_adopted"
API_RATE_LIMITED: Final = "api.rate_limited"
API_REQUEST: Final = "api.request"
API_RETRY_AFTER_CAPPED: Final = "api.retry_after_capped"
API_UNEXPECTED_RESPONSE: Final = "api.unexpected_response"

# config.*
CONFIG_RELOAD_CRASHED: Final = "config.reload_crashed"
CONFIG_RELOAD_FAILED: Final = "config.reload_failed"
CONFIG_RELOADED: Final = "config.reloaded"

# daemon.*
DAEMON_FORCED_EXIT: Final = "daemon.forced_exit"
DAEMON_GRACE_EXPIRED: Final = "daemon.grace_expired"
DAEMON_STARTED: Final = "daemon.started"
DAEMON_STOPPED: Final = "daemon.stopped"
DAEMON_STOPPING: Final = "daemon.stopping"
DAEMON_TASK_CRASHED: Final = "daemon.task_crashed"

# ha.*
HA_ELECTED: Final = "ha.elected"
HA_LOST: Final = "ha.lost"
HA_RESIGNED: Final = "ha.resigned"
HA_STANDBY: Final = "ha.standby"
HA_UNREACHABLE: Final = "ha.unreachable"

# http.*
HTTP_AUTH_FILE_PERMISSIONS: Final = "http.auth_file_permissions"
HTTP_AUTH_RELOAD_FAILED: Final = "http.auth_reload_failed"
HTTP_AUTH_RELOADED: Final = "http.auth_reloaded"
HTTP_CLOSED: Final = "http.closed"
HTTP_CONNECTIONS_SHED: Final = "http.connections_shed"
HTTP_LISTEN_FAILED: Final = "http.listen_failed"
HTTP_LISTENING: Final = "http.listening"
HTTP_LOGIN: Final = "http.login"
HTTP_LOGIN_FAILED: Final = "http.login_failed"
HTTP_REQUEST: Final = "http.request"
HTTP_ROUTE_FAILED: Final = "http.route_failed"

# operator.*
OPERATOR_PAUSED: Final = "operator.paused"
OPERATOR_REFUSED: Final = "operator.refused"
OPERATOR_RESTART_REQUESTED: Final = "operator.restart_requested"
OPERATOR_RESUMED: Final = "operator.resumed"

# poll.*
POLL_COMPLETED: Final = "poll.completed"
POLL_CRASHED: Final = "poll.crashed"
POLL_FAILED: Final = "poll.failed"
POLL_ITEM_UNREADABLE: Final = "poll.item_unreadable"
POLL_OBSERVER_FAILED: Final = "poll.observer_failed"
POLL_SKIPPED: Final = "poll.skipped"

# qr.*
QR_FAILED: Final = "qr.failed"
QR_FETCHED: Final = "qr.fetched"

# restart.*
RESTART_ACCEPTED: Final = "restart.accepted"
RESTART_CONFLICT: Final = "restart.conflict"
RESTART_DEFERRED: Final = "restart.deferred"
RESTART_FAILED: Final = "restart.failed"
RESTART_REQUESTED: Final = "restart.requested"
RESTART_SUCCEEDED: Final = "restart.succeeded"

# session.*
SESSION_GAVE_UP: Final = "session.gave_up"
SESSION_GONE: Final = "session.gone"
SESSION_LOOKUP_FAILED: Final = "session.lookup_failed"
SESSION_NEEDS_PERSON: Final = "session.needs_person"
SESSION_NEEDS_PERSON_CLEARED: Final = "session.needs_person_cleared"
SESSION_NUDGED: Final = "session.nudged"
SESSION_REAPPEARED: Final = "session.reappeared"
SESSION_RECOVERED: Final = "session.recovered"
SESSION_RETRY_REQUESTED: Final = "session.retry_requested"
SESSION_STABLE: Final = "session.stable"
SESSION_STARTING: Final = "session.starting"
SESSION_TOO_MANY_STEPS: Final = "session.too_many_steps"
SESSION_UNHEALTHY: Final = "session.unhealthy"
SESSION_UNKNOWN_STATUS: Final = "session.unknown_status"
SESSION_ZOMBIE: Final = "session.zombie"

# state.*
STATE_CLAIM_LOST: Final = "state.claim_lost"
STATE_CORRUPT_MOVED_ASIDE: Final = "state.corrupt_moved_aside"
STATE_FILE_REPLACED: Final = "state.file_replaced"
STATE_FILE_RESTORED: Final = "state.file_restored"
STATE_HISTORY_PRUNED: Final = "state.history_pruned"
STATE_LEFT_TO_OTHER_PROCESS: Final = "state.left_to_other_process"
STATE_OPENED: Final = "state.opened"
STATE_RECORD_UNREADABLE: Final = "state.record_unreadable"
STATE_UNAVAILABLE: Final = "state.unavailable"
STATE_WRITE_CONFLICT: Final = "state.write_conflict"

# systemd.*
SYSTEMD_NOTIFY_FAILED: Final = "systemd.notify_failed"
SYSTEMD_NOTIFY_RESTORED: Final = "systemd.notify_restored"

# webhook.*
WEBHOOK_NUDGE_FAILED: Final = "webhook.nudge_failed"
WEBHOOK_RECEIVED: Final = "webhook.received"
WEBHOOK_REJECTED: Final = "webhook.rejected"

"""The JSON shapes of sessions, built from pre-serialised fragments.

A list of 10,000 sessions must be cheap, so each session keeps its static fields as a
ready JSON fragment (made once, when the session is created) and an answer is put
together by string concatenation; only the status, ``updatedAt`` and the engine (which
follows the status) change between requests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from . import statuses

if TYPE_CHECKING:
    from .state import SessionState

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON, as the fragments use."""
    return _ENCODER.encode(value)


@lru_cache(maxsize=4096)
def iso(epoch: float) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, the way JavaScript prints one."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@lru_cache(maxsize=256)
def status_json(status: str) -> str:
    return dumps(status)


@lru_cache(maxsize=256)
def engine_json(status: str, zombie: bool = False) -> str:
    """The ``engine`` object, which follows the status, unless the session is a zombie
    (its engine lost its connection while the status still says ``WORKING``)."""
    upper = status.upper()
    if zombie:
        grpc, found, connected = ("TRANSIENT_FAILURE", "CLOSED"), True, False
    elif upper in statuses.HEALTHY:
        grpc, found, connected = ("READY", "READY"), True, True
    elif upper in (statuses.STARTING, statuses.SCAN_QR_CODE):
        grpc, found, connected = ("READY", "CONNECTING"), True, False
    elif upper in (statuses.STOPPED, statuses.CREATED):
        grpc, found, connected = ("IDLE", "CLOSED"), False, False
    else:
        grpc, found, connected = ("TRANSIENT_FAILURE", "CLOSED"), True, False
    return dumps(
        {
            "grpc": {"client": grpc[0], "stream": grpc[1]},
            "gows": {"found": found, "connected": connected},
        }
    )


@lru_cache(maxsize=1024)
def config_json(user_id: str, user_email: str, webhook_url: str | None) -> str:
    """The ``config`` object (every field the SDK requires)."""
    webhooks: list[dict[str, Any]] = []
    if webhook_url:
        webhooks.append({"url": webhook_url, "events": ["session.status", "message"]})
    return dumps(
        {
            "metadata": {"userEmail": user_email, "userId": user_id},
            "proxy": None,
            "debug": False,
            "noweb": {"markOnline": True, "store": {"enabled": True, "fullSync": False}},
            "webhooks": webhooks,
        }
    )


def details_prefix(s: SessionState) -> str:
    """The session details, less ``updatedAt``: an object left open after a comma."""
    details = {
        "id": s.db_id,
        "uniqueSessionId": s.uid,
        "userId": s.user_id,
        "sessionName": s.session_name,
        "phoneNumber": s.phone_number,
        "enableAccountProtection": s.enable_account_protection,
        "enableMessageLogging": s.enable_message_logging,
        "enableWebhook": s.enable_webhook,
        "webhookUrl": s.webhook_url,
        "createdAt": s.created_at,
    }
    return dumps(details)[:-1] + ',"updatedAt":'


def flat(s: SessionState) -> str:
    """A full Session object (what get, start, stop and restart answer)."""
    return (
        f'{s.prefix}{s.updated_json},"name":{s.name_json},"status":{status_json(s.status)},'
        f'"config":{s.config_json},"engine":{engine_json(s.status, s.zombie)}}}'
    )


def nested(s: SessionState) -> str:
    """A list item as the SDK types it: ``{"session": {...}, "downstream": {...}}``."""
    return (
        f'{{"session":{s.prefix}{s.updated_json}}},"downstream":{{"name":{s.name_json},'
        f'"status":{status_json(s.status)},"config":{s.config_json},'
        f'"engine":{engine_json(s.status, s.zombie)}}}}}'
    )


def error_body(code: int, message: str) -> bytes:
    """An error answer, NestJS style: ``{"statusCode", "message", "error"}``."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    return dumps({"statusCode": code, "message": message, "error": phrase}).encode()

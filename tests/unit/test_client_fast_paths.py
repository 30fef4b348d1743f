"""The client's start-up and speed paths: the fast reading of a list answer gives exactly
what the generic reading gives, or steps aside (None) so that the generic reading
describes the problems; a plain http:// client loads no certificate store."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.api.client import _fast_session_list, _parse_session_list, _tls_context, _Unreadable
from supervisor.domain.models import SessionInfo, SessionList


def generic(body: bytes) -> SessionList | None:
    """What the client made of ``body`` before the fast path: None if unreadable."""
    try:
        return _parse_session_list(json.loads(body))
    except (ValueError, RecursionError, _Unreadable):
        return None


def nested(sid: str, status: str, name: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"id": "65f1", "uniqueSessionId": sid, "phoneNumber": "+1555"}
    if name is not None:
        details["sessionName"] = name
    return {"session": details,
            "downstream": {"name": sid, "status": status, "config": {"webhooks": []},
                           "engine": {"gows": {"found": True}}}}


def flat(sid: str, status: str, name: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"uniqueSessionId": sid, "status": status, "config": {"x": [1]}}
    if name is not None:
        item["sessionName"] = name
    return item


def test_reads_every_readable_shape_like_the_generic_reading() -> None:
    items = [nested("a", "WORKING", "Shop"), flat("b", "STOPPED"), nested("c", "FAILED")]
    docs: list[Any] = [{"sessions": items}, {"data": items}, items,
                       {"sessions": None, "data": items}]
    for doc in docs:
        body = json.dumps(doc).encode()
        fast = _fast_session_list(body)
        assert fast is not None
        assert fast == generic(body)
        assert fast.sessions[0] == SessionInfo("a", "Shop", "WORKING")


def test_steps_aside_for_problems_duplicates_and_other_documents() -> None:
    docs: tuple[Any, ...] = (
        {"sessions": [flat("a", "WORKING"), flat("a", "STOPPED")]},  # duplicate id
        {"sessions": [flat("a", "WORKING"), "junk"]},  # an item that is not an object
        {"sessions": [{"uniqueSessionId": "a", "status": 3}]},  # a status that is no string
        {"sessions": [{"status": "WORKING"}]},  # no id
        {"sessions": [{"session": {"uniqueSessionId": "a"}, "downstream": "up"}]},
        {"sessions": {"a": "WORKING"}},
        {"other": []},
        "text",
    )
    for doc in docs:
        assert _fast_session_list(json.dumps(doc).encode()) is None


def test_steps_aside_for_json_only_the_standard_library_reads() -> None:
    for body in (
        b'\xef\xbb\xbf{"sessions": []}',  # a byte order mark
        b'{"sessions": [{"uniqueSessionId": "\\ud800", "status": "WORKING"}]}',  # lone surrogate
        b'{"sessions": [{"uniqueSessionId": "a", "status": "WORKING", "x": NaN}]}',
        b"",
        b"{",
    ):
        assert _fast_session_list(body) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=5,
)
ids = st.sampled_from(["a", "b", "", "sess-0001"]) | json_values
statuses = st.sampled_from(["WORKING", "STOPPED", "", "scan_qr_code"]) | json_values
names = st.sampled_from(["Shop", ""]) | json_values


@st.composite
def details(draw: st.DrawFn) -> dict[str, Any]:
    fields = {"uniqueSessionId": ids, "status": statuses, "sessionName": names, "name": names}
    return {key: draw(value) for key, value in fields.items() if draw(st.booleans())}


@st.composite
def items(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["nested", "flat", "odd"]))
    if kind == "flat":
        return draw(details())
    if kind == "odd":
        return draw(json_values)
    item: dict[str, Any] = {"session": draw(details() | json_values)}
    if draw(st.booleans()):
        item["downstream"] = draw(details() | json_values)
    return item


@st.composite
def documents(draw: st.DrawFn) -> Any:
    listed = draw(st.lists(items(), max_size=5))
    return draw(st.sampled_from([
        {"sessions": listed}, {"data": listed}, listed, {"sessions": None, "data": listed},
        {"sessions": listed, "data": []}, {"nothing": listed},
    ]))


@settings(max_examples=300, deadline=None)
@given(documents())
def test_never_disagrees_with_the_generic_reading(doc: Any) -> None:
    body = json.dumps(doc).encode()
    fast = _fast_session_list(body)
    expected = generic(body)
    if fast is not None:
        assert fast == expected


def test_plain_http_gets_a_context_that_trusts_no_certificate() -> None:
    # A loopback http:// base URL never uses TLS: no certificate store is loaded for it,
    # and the context it gets still verifies, so it would refuse any TLS peer.
    plain = _tls_context(httpx.URL("http://127.0.0.1:8787"))
    assert isinstance(plain, ssl.SSLContext)
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname
    assert plain.get_ca_certs() == []
    secure = _tls_context(httpx.URL("https://api.wasend.dev"))  # httpx's default store
    assert secure.verify_mode == ssl.CERT_REQUIRED and secure.check_hostname
    assert secure.get_ca_certs() != []

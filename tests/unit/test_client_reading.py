"""The client's reading of the API's answers, through ``list_sessions`` and ``get_session``
against respx routes: every document gives what the documented rules say (``model`` and
``session_model`` below, written over ``json.loads`` as a reader of the README would),
whether msgspec or the standard library reads the body; and a plain http:// client loads
no certificate store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from supervisor.api.client import WasendClient
from supervisor.api.errors import UnexpectedResponse
from supervisor.domain.models import SessionInfo, SessionList
from supervisor.domain.secrets import Secrets

KEY = "sk-TEST-SECRET-KEY-123"
BASE = "http://127.0.0.1:8787"
SHAPES = 'expected {"sessions": [...]}, {"data": [...]} or a JSON array of sessions'


# --- the rules, as the README states them --------------------------------------------


def document(body: bytes) -> Any:
    """The JSON document, or why there is none (a ``Refused``)."""
    if not body.strip():
        return Refused("empty body")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return Refused("body is not JSON")


class Refused(str):
    """Why an answer cannot be read."""


def extract(item: dict[str, Any]) -> tuple[Any, Any, str | None, bool | None]:
    """(uniqueSessionId, status, name, engine connected) of a flat or a nested item."""
    session = item.get("session")
    source = session if isinstance(session, dict) else item
    downstream = item.get("downstream")
    status = engine = None
    if isinstance(session, dict) and isinstance(downstream, dict):
        status = downstream.get("status")
        engine = downstream.get("engine")
    if status is None:
        status = source.get("status")
    if engine is None:
        engine = source.get("engine")
    gows = engine.get("gows") if isinstance(engine, dict) else None
    connected = gows.get("connected") if isinstance(gows, dict) else None
    name = source.get("sessionName")
    if not isinstance(name, str) or not name:
        name = source.get("name")
    return (source.get("uniqueSessionId"), status, name if isinstance(name, str) and name
            else None, connected if isinstance(connected, bool) else None)


def session_model(body: bytes, requested: str = "s1") -> SessionInfo | str:
    """What an answer about one session means, or why it cannot be read."""
    data = document(body)
    if isinstance(data, Refused):
        return data
    if (isinstance(data, dict) and "status" not in data and "session" not in data
            and isinstance(data.get("data"), dict)):
        data = data["data"]
    if not isinstance(data, dict):
        return "expected a Session object"
    sid, status, name, connected = extract(data)
    if not isinstance(status, str) or not status:
        return "no string status in the session"
    if sid is None or sid == "":
        sid = requested
    elif not isinstance(sid, str):
        return "uniqueSessionId is not a string"
    elif sid != requested:
        return "the answer is about another session"
    return SessionInfo(sid, name, status, connected)


def model(body: bytes) -> SessionList | str:
    """What a list answer means, or why it cannot be read."""
    data = document(body)
    if isinstance(data, Refused):
        return data
    items = data
    if isinstance(data, dict):
        items = data.get("sessions")
        if items is None:
            items = data.get("data")
    if not isinstance(items, list):
        return SHAPES
    sessions: list[SessionInfo] = []
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        sid, status, name, connected = (extract(item) if isinstance(item, dict)
                                        else (None, None, None, None))
        failed = [why for wrong, why in (  # the first rule an item breaks is its problem
            (not isinstance(item, dict), "not an object"),
            (not isinstance(sid, str) or sid == "", "no string uniqueSessionId"),
            (not isinstance(status, str) or status == "", "no string status"),
            (isinstance(sid, str) and sid in seen,
             "duplicate uniqueSessionId, the first one is kept"),
        ) if wrong]
        if not failed:
            assert isinstance(sid, str) and isinstance(status, str)
            seen.add(sid)
            sessions.append(SessionInfo(sid, name, status, connected))
            continue
        shown = Secrets([KEY]).excerpt(json.dumps(item, ensure_ascii=False)[:4096], limit=100)
        problems.append(f"item {index}: {failed[0]}: {shown}")
    return SessionList(tuple(sessions), tuple(problems))


# --- through the client --------------------------------------------------------------


@pytest.fixture
def answers() -> Iterator[respx.Route]:
    """The list endpoint's route; each test says what it answers."""
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router.get("/sessions", name="list")


def read(route: respx.Route, *bodies: bytes, call: str = "list") -> list[Any]:
    """What ``list_sessions`` (or ``get_session("s1")``, for ``call="get"``) makes of each
    body, or the reason it gives for refusing it."""

    async def each() -> list[Any]:
        got: list[Any] = []
        async with WasendClient(BASE, SecretStr(KEY), timeout=5.0) as client:
            for body in bodies:
                route.mock(return_value=httpx.Response(200, content=body))
                try:
                    got.append(await client.list_sessions() if call == "list"
                               else await client.get_session("s1"))
                except UnexpectedResponse as exc:
                    got.append(str(exc).replace(f"{call}: HTTP 200: ", "", 1))
        return got

    return asyncio.run(each())


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


def test_every_readable_shape_is_read_as_the_rules_say() -> None:
    items = [nested("a", "WORKING", "Shop"), flat("b", "STOPPED"), nested("c", "FAILED")]
    docs: list[Any] = [{"sessions": items}, {"data": items}, items,
                       {"sessions": None, "data": items}]
    with respx.mock(base_url=BASE) as router:
        route = router.get("/sessions")
        for doc in docs:
            body = json.dumps(doc).encode()
            (got,) = read(route, body)
            assert got == model(body)
            assert isinstance(got, SessionList)
            assert got.sessions[0] == SessionInfo("a", "Shop", "WORKING")
            assert got.problems == ()


def test_the_engines_own_view_is_read_where_each_shape_carries_it() -> None:
    def engine(connected: object) -> dict[str, Any]:
        return {"grpc": {"client": "READY", "stream": "CLOSED"},
                "gows": {"found": True, "connected": connected}}

    zombie = nested("a", "WORKING")
    zombie["downstream"]["engine"] = engine(False)
    alive = flat("b", "WORKING") | {"engine": engine(True)}
    # the session's own engine, when the downstream has none
    inner = nested("c", "WORKING")
    del inner["downstream"]["engine"]
    inner["session"]["engine"] = engine(False)
    odd = flat("d", "WORKING") | {"engine": engine("no")}
    other = flat("e", "WORKING") | {"engine": {"noweb": {"connected": False}}}
    bare = flat("f", "WORKING") | {"engine": "gows"}
    doc = {"sessions": [zombie, alive, inner, odd, other, bare, nested("g", "WORKING")]}
    body = json.dumps(doc).encode()
    with respx.mock(base_url=BASE) as router:
        (got,) = read(router.get("/sessions"), body)
    assert [s.engine_connected for s in got.sessions] == [False, True, False, None, None,
                                                           None, None]
    assert got == model(body)
    one = json.dumps(flat("s1", "WORKING") | {"engine": engine(False)}).encode()
    with respx.mock(base_url=BASE) as router:
        (single,) = read(router.get("/sessions/s1"), one, call="get")
    assert single == SessionInfo("s1", None, "WORKING", False) == session_model(one)


def test_downstream_status_comes_first_in_a_nested_item_only(answers: respx.Route) -> None:
    def session(sid: str, status: Any) -> dict[str, Any]:
        return {"uniqueSessionId": sid, "status": status}

    items = [
        {"session": session("a", "STOPPED"), "downstream": {"status": "WORKING"}},
        {"session": session("b", "STOPPED"), "downstream": {"status": None}},
        {"session": session("c", "STOPPED"), "downstream": "WORKING"},
        {"session": session("d", None), "downstream": {"status": 7}},
        {**session("e", "FAILED"), "downstream": {"status": "WORKING"}},  # flat: not read
    ]
    body = json.dumps({"sessions": items}).encode()
    (got,) = read(answers, body)
    assert got == model(body)
    assert isinstance(got, SessionList)
    assert [(i.session_id, i.status) for i in got.sessions] == [
        ("a", "WORKING"), ("b", "STOPPED"), ("c", "STOPPED"), ("e", "FAILED")]
    assert [p.split(":")[0:2] for p in got.problems] == [["item 3", " no string status"]]


def test_problems_duplicates_and_other_documents_are_described_as_the_rules_say(
    answers: respx.Route,
) -> None:
    docs: tuple[Any, ...] = (
        {"sessions": [flat("a", "WORKING"), flat("a", "STOPPED")]},  # duplicate id
        {"sessions": [flat("a", "WORKING"), "junk", [1, {"k": KEY}], None]},  # not objects
        {"sessions": [{"uniqueSessionId": "a", "status": 3}]},  # a status that is no string
        {"sessions": [{"status": "WORKING", "token": "abc"}]},  # no id
        {"sessions": [{"session": {"uniqueSessionId": "a"}, "downstream": "up"}]},
        {"sessions": [{"session": "flat after all", "uniqueSessionId": "a", "status": "X"}]},
        {"sessions": {"a": "WORKING"}},
        {"sessions": "x", "data": [flat("a", "WORKING")]},
        {"other": []},
        "text",
        None,
    )
    bodies = [json.dumps(doc).encode() for doc in docs]
    expected = [model(body) for body in bodies]
    assert read(answers, *bodies) == expected
    assert all(e == SHAPES or isinstance(e, SessionList) for e in expected)
    assert expected[1] == SessionList(
        (SessionInfo("a", None, "WORKING"),),
        ('item 1: not an object: "junk"',
         'item 2: not an object: [1, {"k": "[REDACTED]"}]',
         "item 3: not an object: null"))


def test_json_only_the_standard_library_reads_is_read_the_same_way(
    answers: respx.Route,
) -> None:
    bodies = (
        b'\xef\xbb\xbf{"sessions": [{"uniqueSessionId": "a", "status": "WORKING"}]}',  # a BOM
        json.dumps({"data": [flat("a", "WORKING", "Shop")]}).encode("utf-16"),
        b'{"sessions": [{"uniqueSessionId": "\\ud800", "status": "WORKING"}]}',  # lone surrogate
        b'{"sessions": [{"uniqueSessionId": "a", "status": "WORKING", "x": NaN}, 1]}',
        b'[{"uniqueSessionId": "a", "status": "WORKING", "x": Infinity}, {"status": NaN}]',
        b"[" * 995 + b"]" * 995,  # deeper than msgspec reads
        b"",
        b"  \n",
        b"{",
        b"\xff\xfe\x00",
    )
    assert read(answers, *bodies) == [model(body) for body in bodies]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=5) | st.just(KEY),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=5,
)
ids = st.sampled_from(["a", "b", "", "sess-0001", "s1"]) | json_values
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
        item["downstream"] = draw(st.fixed_dictionaries({"status": statuses}) | details()
                                  | json_values)
    return item


@st.composite
def documents(draw: st.DrawFn) -> Any:
    listed = draw(st.lists(items(), max_size=5))
    return draw(st.sampled_from([
        {"sessions": listed}, {"data": listed}, listed, {"sessions": None, "data": listed},
        {"sessions": listed, "data": []}, {"nothing": listed}, {"sessions": {}, "data": listed},
    ]))


def stdlib_only(body: bytes) -> bytes:
    """The same document, in a form only the standard library reads."""
    return b"\xef\xbb\xbf" + body  # a byte order mark


@settings(max_examples=60, deadline=None)
@given(st.lists(documents(), min_size=1, max_size=10))
def test_any_document_is_read_as_the_rules_say(docs: list[Any]) -> None:
    bodies = [json.dumps(doc).encode() for doc in docs]
    bodies += [stdlib_only(body) for body in bodies[:3]]
    bodies += [json.dumps(doc).replace(": 1", ": NaN").encode() for doc in docs[:2]]
    with respx.mock(base_url=BASE) as router:
        assert read(router.get("/sessions"), *bodies) == [model(body) for body in bodies]


@st.composite
def answers_about_one(draw: st.DrawFn) -> Any:
    item = draw(items())
    return draw(st.sampled_from([
        item, {"data": item}, {"data": item, "status": None}, {"data": item, "session": None},
        {"data": item, "status": "WORKING"}, [item],
    ]))


def test_an_answer_about_one_session_is_read_as_the_rules_say() -> None:
    bodies = [json.dumps(doc).encode() for doc in (
        {"uniqueSessionId": "s1", "status": "WORKING", "name": "Shop"},
        {"status": "WORKING"},  # no id: the session asked about
        {"uniqueSessionId": "", "status": "WORKING"},  # an empty one likewise
        {"uniqueSessionId": None, "status": "WORKING"},
        {"data": {"uniqueSessionId": "s1", "status": "STOPPED"}},
        {"data": {"uniqueSessionId": "s1", "status": "STOPPED"}, "status": None},
        {"data": {"uniqueSessionId": "s1", "status": "STOPPED"}, "session": None},
        {"session": {"uniqueSessionId": "s1"}, "downstream": {"status": "FAILED"}},
        {"uniqueSessionId": "s2", "status": "WORKING"},
        {"uniqueSessionId": 1, "status": "WORKING"},
        [{"uniqueSessionId": "s1", "status": "WORKING"}],
    )] + [b'\xef\xbb\xbf{"data": {"status": "WORKING"}}', b"", b"nope"]
    expected = [session_model(body) for body in bodies]
    with respx.mock(base_url=BASE) as router:
        assert read(router.get("/sessions/s1"), *bodies, call="get") == expected
    assert expected[1:4] == [SessionInfo("s1", None, "WORKING")] * 3
    assert expected[4:8] == [SessionInfo("s1", None, "STOPPED"),
                             "no string status in the session",
                             "no string status in the session",
                             SessionInfo("s1", None, "FAILED")]


@settings(max_examples=40, deadline=None)
@given(st.lists(answers_about_one(), min_size=1, max_size=10))
def test_any_answer_about_one_session_is_read_as_the_rules_say(docs: list[Any]) -> None:
    bodies = [json.dumps(doc).encode() for doc in docs]
    bodies += [stdlib_only(body) for body in bodies[:3]]
    with respx.mock(base_url=BASE) as router:
        assert read(router.get("/sessions/s1"), *bodies, call="get") == [
            session_model(body) for body in bodies]


# --- start-up ------------------------------------------------------------------------


def test_a_plain_http_client_loads_no_certificate_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # A loopback http:// base URL never uses TLS (redirects are not followed): loading
    # certifi's store for it would cost every start; an https:// one loads it.
    loaded: list[bool] = []
    real = httpx.create_ssl_context

    def spy(*args: Any, **kwargs: Any) -> Any:
        loaded.append(kwargs.get("trust_env", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", spy)
    WasendClient("http://127.0.0.1:8787", SecretStr(KEY), timeout=1.0)
    assert loaded == []
    WasendClient("https://api.wasend.dev", SecretStr(KEY), timeout=1.0)
    assert loaded == [True]  # httpx's default store, or SSL_CERT_FILE/SSL_CERT_DIR as set

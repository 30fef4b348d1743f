"""Who may see the page: the auth file's logins (parsed in one-line problems that never
show a token), checks that cost the same whoever they name, bearer tokens remembered by
a keyed digest in a bounded cache, failed logins slowed and locked out per peer, the
logins' session ids and CSRF tokens, and ``hash-token``."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from supervisor import cli
from supervisor.domain import events as ev
from supervisor.domain.secrets import Secrets
from supervisor.web import auth
from supervisor.web.auth import (
    AUTH_FILE_MAX_BYTES,
    LOGIN_LOCKOUT,
    TOKEN_MIN_LENGTH,
    Credentials,
    LoginLimiter,
    Sessions,
    bearer_token,
    csrf_ok,
    hash_token,
    load_credentials,
    peer_key,
)
from tests.fakes import FakeClock

ALICE = "alice-Zq8vN3pL7wR2xK9m"  # plain in the files below
BOB = "bob-T4yB6cD1hJ5sQ0wE3r"  # hashed in the files below
WRONG = "wrong-U7iO9pA2sD4fG6hJ"


@pytest.fixture(scope="module")
def bob_hash() -> str:
    return hash_token(BOB)


@pytest.fixture
def mixed(bob_hash: str) -> Credentials:
    return Credentials.parse(f"# the operators\n\nalice:{ALICE}\n  bob : {bob_hash}  \n", "f")


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the scrypt derivations (each one, whatever calls it)."""
    calls: list[int] = []
    real = auth._derive

    def counting(*args: Any) -> bytes:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(auth, "_derive", counting)
    return calls


@pytest.fixture
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A fast stand-in for scrypt (a salted SHA-256), counted, for tests of many hashes."""
    calls: list[int] = []

    def cheap(token: bytes, n: int, r: int, p: int, salt: bytes, length: int) -> bytes:
        calls.append(1)
        return hashlib.sha256(salt + token).digest()[:length]

    monkeypatch.setattr(auth, "_derive", cheap)
    return calls


# --- parsing ---------------------------------------------------------------------------------


def test_a_file_of_plain_and_hashed_tokens_with_comments_and_blank_lines(
        mixed: Credentials) -> None:
    assert len(mixed) == 2
    assert "alice" in mixed and "bob" in mixed and "carol" not in mixed
    assert repr(mixed) == "<Credentials: 2 names>"


def test_every_token_and_hash_joins_the_process_secrets_and_no_repr_shows_one(
        bob_hash: str) -> None:
    secrets = Secrets()
    found = Credentials.parse(f"alice:{ALICE}\nbob:{bob_hash}\n", "f", secrets=secrets)
    assert secrets.holds(ALICE) and secrets.holds(bob_hash)
    assert len(secrets) == 2  # bob's token is not known yet: only its hash
    salt, digest = bob_hash.split("$")[4:]
    for shown in (repr(found), repr(found._lines), repr(found._hashed)):
        for value in (ALICE, bob_hash, salt, digest, repr(auth._unb64(salt)),
                      repr(auth._unb64(digest))):
            assert value not in shown
    assert not found.check("bob", WRONG) and found.bearer(WRONG) is None
    assert len(secrets) == 2  # a wrong token is no secret
    assert found.check("bob", BOB)
    assert secrets.holds(BOB)  # verified: never printed from now on


def test_a_hashed_token_verified_by_bearer_joins_the_secrets_too(bob_hash: str) -> None:
    secrets = Secrets()
    found = Credentials.parse(f"bob:{bob_hash}\n", "f", secrets=secrets)
    assert found.bearer(BOB) == "bob"
    assert secrets.holds(BOB)


GOOD = "abcdefghijklmnopqrstuvwx"
BAD_LINES = [
    (f"alice {GOOD}", "is not name:token"),
    (f"al ice:{GOOD}", "has a name that is not 1 to 64 letters"),
    (f"al/ice:{GOOD}", "has a name that is not 1 to 64 letters"),
    (f"{'a' * 65}:{GOOD}", "has a name that is not 1 to 64 letters"),
    (f":{GOOD}", "has a name that is not 1 to 64 letters"),
    ("alice:", "has an empty token"),
    ("alice:" + GOOD[: TOKEN_MIN_LENGTH - 1], f"has a token shorter than {TOKEN_MIN_LENGTH}"),
    ("alice:" + "x" * 513, "has a token longer than 512 characters"),
    ("alice:abcdefgh ijklmnopqrst", "has a token with a space or a control character"),
    ("alice:abcdefgh\x07ijklmnopqrst", "has a token with a space or a control character"),
    ("alice:scrypt$16384$8$1$c2FsdHNhbHQ", "has a hash that is not scrypt$N$R$P$SALT$HASH"),
    ("alice:scrypt$x$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
     "has a hash that is not scrypt$N$R$P$SALT$HASH"),
    ("alice:scrypt$16384$8$1$!!!!$aGFzaGhhc2hoYXNoaGFzaA", "salt or hash is not base64"),
    ("alice:scrypt$16384$8$1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaA", "a salt of under 8 bytes"),
    ("alice:scrypt$1024$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "whose cost is not accepted"),
    ("alice:scrypt$16383$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "whose cost is not accepted"),
    ("alice:scrypt$16384$8$0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "whose cost is not accepted"),
    ("alice:scrypt$1048576$32$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
     "whose cost is not accepted"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_each_kind_of_bad_line_is_one_line_naming_the_file_and_line_never_its_token(
        line: str, reason: str) -> None:
    text = f"# logins\n\nbob:{WRONG}\n{line}\n"
    with pytest.raises(ValueError, match=r"^/etc/wasend/auth line 4 ") as caught:
        Credentials.parse(text, "/etc/wasend/auth")
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message
    token = line.partition(":")[2] or line
    for piece in (token.strip(), GOOD, WRONG, "c2FsdHNhbHQ", "aGFzaGhhc2hoYXNoaGFzaA"):
        if len(piece) >= 4:
            assert piece not in message


def test_a_name_twice_is_refused_naming_both_lines() -> None:
    with pytest.raises(ValueError, match=r"^auth line 3 repeats the name alice of line 1$"):
        Credentials.parse(f"alice:{ALICE}\n#\nalice:{WRONG}\n", "auth")


@pytest.mark.parametrize("text", ["", "\n# nobody yet\n\n"])
def test_a_file_with_no_login_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^auth holds no name:token line$"):
        Credentials.parse(text, "auth")


# --- reading the file --------------------------------------------------------------------------


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_load_credentials_reads_the_file_and_adds_its_tokens_to_secrets(tmp_path: Path) -> None:
    secrets = Secrets()
    with capture_logs() as logs:
        found = load_credentials(write(tmp_path / "auth", f"alice:{ALICE}\n"), secrets=secrets)
    assert found.check("alice", ALICE) and secrets.holds(ALICE)
    assert found.exposure is None and logs == []


def test_a_file_others_can_read_is_one_warning_naming_it_never_its_content(
        tmp_path: Path) -> None:
    path = write(tmp_path / "auth", f"alice:{ALICE}\n", 0o644)
    with capture_logs() as logs:
        found = load_credentials(path, env={})
    assert logs == [{"event": ev.HTTP_AUTH_FILE_PERMISSIONS, "log_level": "warning",
                     "path": str(path), "mode": "0644", "readable_by": "other users",
                     "hint": f"chmod 600 {path}"}]
    assert found.exposure == (0o644, "other users")


def test_a_systemd_credential_is_not_warned_about(tmp_path: Path) -> None:
    path = write(tmp_path / "auth", f"alice:{ALICE}\n", 0o644)
    with capture_logs() as logs:
        load_credentials(path, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert logs == []


def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = write(tmp_path / "big", f"alice:{ALICE}\n" + "#" * AUTH_FILE_MAX_BYTES)
    binary = tmp_path / "binary"
    binary.write_bytes(b"alice:" + b"\xff" * 20)
    cases = {
        tmp_path / "missing": "No such file or directory",
        fifo: "not a regular file (a FIFO)",
        big: f"over {AUTH_FILE_MAX_BYTES} bytes, so not an auth file",
        binary: "not UTF-8 text",
    }
    for path, why in cases.items():
        with pytest.raises(ValueError, match=f"^{re.escape(f'cannot read {path}: {why}')}$"):
            load_credentials(path)


def test_a_bad_line_of_the_file_names_its_path_and_number(tmp_path: Path) -> None:
    path = write(tmp_path / "auth", f"alice:{ALICE}\nbob:short\n")
    expected = f"{path} line 2 has a token shorter than {TOKEN_MIN_LENGTH} characters"
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        load_credentials(path)


# --- check and bearer ---------------------------------------------------------------------------


def test_check_takes_the_right_token_of_a_name_plain_or_hashed(mixed: Credentials) -> None:
    assert mixed.check("alice", ALICE)
    assert mixed.check("bob", BOB)
    assert not mixed.check("alice", BOB)
    assert not mixed.check("bob", ALICE)
    assert not mixed.check("bob", WRONG)
    assert not mixed.check("carol", ALICE)
    assert not mixed.check("alice", ALICE[:TOKEN_MIN_LENGTH - 1])
    assert not mixed.check("alice", "")


def test_bearer_finds_the_name_of_a_plain_or_hashed_token(mixed: Credentials) -> None:
    assert mixed.bearer(ALICE) == "alice"
    assert mixed.bearer(BOB) == "bob"
    assert mixed.bearer(WRONG) is None
    assert mixed.bearer("") is None
    assert mixed.bearer(f"{ALICE}\udcff") is None  # no exception for an odd string either


@pytest.mark.parametrize(("header", "token"), [
    (f"Bearer {ALICE}", ALICE),
    (f"bearer   {ALICE} ", ALICE),
    (f"BEARER {ALICE}", ALICE),
    (None, None),
    ("", None),
    ("Bearer", None),
    ("Bearer ", None),
    (f"Basic {ALICE}", None),
    (f"Bearer {ALICE} more", None),
    (f"Bearer{ALICE}", None),
])
def test_bearer_token_reads_the_authorization_header(header: str | None,
                                                     token: str | None) -> None:
    assert bearer_token(header) == token


def test_every_check_costs_one_scrypt_whoever_it_names(
        mixed: Credentials, derivations: list[int]) -> None:
    """A miss costs like a hit: an unknown name, a wrong token, a plain token's name all
    run the one scrypt a hashed name's check runs."""
    for name, token in [("bob", BOB), ("bob", WRONG), ("carol", WRONG), ("carol", BOB),
                        ("alice", ALICE), ("alice", WRONG)]:
        derivations.clear()
        mixed.check(name, token)
        assert len(derivations) == 1, (name, token)


def test_a_file_of_plain_tokens_runs_no_scrypt(derivations: list[int]) -> None:
    plain = Credentials.parse(f"alice:{ALICE}\n", "f")
    assert plain.check("alice", ALICE) and not plain.check("carol", ALICE)
    assert plain.bearer(ALICE) == "alice" and plain.bearer(WRONG) is None
    assert derivations == []


def test_a_token_that_cannot_be_one_runs_no_scrypt(
        mixed: Credentials, derivations: list[int]) -> None:
    assert not mixed.check("bob", "short")
    assert mixed.bearer("x" * 10_000) is None
    assert derivations == []


def test_a_hashed_bearer_token_is_verified_once_then_remembered(
        bob_hash: str, derivations: list[int]) -> None:
    many = Credentials.parse(
        "".join(f"u{n}:{bob_hash}\n" for n in range(3)).replace("u2:", "bob:"), "f")
    assert many.bearer(BOB) == "u0"
    assert len(derivations) == 1
    for _ in range(5):
        assert many.bearer(BOB) == "u0"
    assert len(derivations) == 1  # not one scrypt per name per request
    assert many.bearer(WRONG) is None
    assert len(derivations) == 1 + 3  # a refused token: one per hashed line


def test_the_bearer_cache_is_bounded_and_keyed_by_digest_not_by_token(
        monkeypatch: pytest.MonkeyPatch, cheap_scrypt: list[int]) -> None:
    monkeypatch.setattr(auth, "BEARER_CACHE_MAX", 3)
    tokens = [f"token-number-{n:04d}-xyz" for n in range(5)]
    found = Credentials.parse("".join(f"u{n}:{hash_token(t)}\n" for n, t in enumerate(tokens)),
                              "f")
    for token in tokens:
        found.bearer(token)
    cache = found._cache
    assert len(cache) == 3
    assert set(cache.values()) == {"u2", "u3", "u4"}  # the least recently used went first
    for key in cache:
        assert len(key) == 32 and all(t.encode() not in key for t in tokens)
    cheap_scrypt.clear()
    assert found.bearer(tokens[4]) == "u4" and cheap_scrypt == []  # from the cache
    assert found.bearer(tokens[0]) == "u0" and len(cheap_scrypt) == 1  # verified again


def test_stamps_change_with_a_line_token_and_hold_across_reads(bob_hash: str) -> None:
    first = Credentials.parse(f"alice:{ALICE}\nbob:{bob_hash}\n", "f")
    again = Credentials.parse(f"bob:{bob_hash}\nalice:{ALICE}\n", "f")
    rotated = Credentials.parse(f"alice:{WRONG}\nbob:{hash_token(BOB)}\n", "f")
    for name in ("alice", "bob"):
        assert first.stamp(name) == again.stamp(name) != rotated.stamp(name)
    assert first.stamp("carol") is None


# --- hash_token --------------------------------------------------------------------------------


def test_hash_token_makes_a_fresh_salted_scrypt_line_that_verifies() -> None:
    made = hash_token(ALICE)
    again = hash_token(ALICE)
    scheme, n, r, p, _salt, _digest = made.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert made != again and ALICE not in made
    assert Credentials.parse(f"alice:{made}\n", "f").check("alice", ALICE)


@pytest.mark.parametrize(("token", "reason"), [
    ("", "an empty token"),
    ("short-token", f"a token shorter than {TOKEN_MIN_LENGTH} characters"),
    ("a token with spaces", "a token with a space or a control character in it"),
])
def test_hash_token_refuses_a_token_that_cannot_be_one(token: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        hash_token(token)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_hash_token_from_stdin_prints_a_hash_that_verifies(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{ALICE}\n"))
    assert cli.main(["hash-token"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.endswith("\n") and out.count("\n") == 1
    assert out.startswith("scrypt$")
    assert Credentials.parse(f"alice:{out.strip()}", "f").check("alice", ALICE)


def test_cli_hash_token_on_a_terminal_asks_twice(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    answers = iter([ALICE, ALICE, ALICE, WRONG])
    prompts: list[str] = []

    def getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", getpass)
    monkeypatch.setattr("sys.stdin", _Tty())
    assert cli.main(["hash-token"]) == 0
    out = capsys.readouterr().out.strip()
    assert prompts == ["Token: ", "Again: "]
    assert Credentials.parse(f"alice:{out}", "f").check("alice", ALICE)
    assert cli.main(["hash-token"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "wasend-supervisor: hash-token: the two entries differ\n"


@pytest.mark.parametrize("given", ["", "\n", "short-token\n"])
def test_cli_hash_token_refuses_an_empty_or_short_token_in_one_line(
        given: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(given))
    assert cli.main(["hash-token"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("wasend-supervisor: hash-token: an empty token") or err == (
        f"wasend-supervisor: hash-token: a token shorter than {TOKEN_MIN_LENGTH} characters\n")
    assert "short-token" not in err


# --- failed logins -------------------------------------------------------------------------------


def test_failures_slow_a_peer_down_doubling_to_a_cap_then_lock_it_out() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock)
    assert limiter.delay("192.0.2.1") == 0.0 and limiter.blocked("192.0.2.1") is None
    delays = []
    for _ in range(9):
        limiter.failed("192.0.2.1")
        delays.append(limiter.delay("192.0.2.1"))
        clock.advance(1)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert limiter.blocked("192.0.2.1") is None
    assert limiter.delay("192.0.2.2") == 0.0  # another peer is not slowed
    limiter.failed("192.0.2.1")  # the 10th within 10 minutes
    assert limiter.blocked("192.0.2.1") == LOGIN_LOCKOUT == 600.0
    limiter.failed("192.0.2.1")  # while locked out: not lengthened
    clock.advance(599)
    assert limiter.blocked("192.0.2.1") == 1.0
    clock.advance(1)
    assert limiter.blocked("192.0.2.1") is None
    assert limiter.delay("192.0.2.1") == 0.0  # a fresh start
    assert len(limiter) == 0


def test_failures_older_than_the_window_no_longer_count() -> None:
    clock = FakeClock()
    limiter = LoginLimiter(clock)
    limiter.failed("192.0.2.1")
    clock.advance(300)
    for _ in range(8):
        limiter.failed("192.0.2.1")
    clock.advance(300)  # the first failure is 10 minutes old: 8 are left
    assert limiter.delay("192.0.2.1") == 8.0
    limiter.failed("192.0.2.1")
    assert limiter.blocked("192.0.2.1") is None  # 9 within the window, not 10
    limiter.failed("192.0.2.1")
    assert limiter.blocked("192.0.2.1") == 600.0
    clock.advance(1200)
    assert limiter.delay("192.0.2.1") == 0.0 and len(limiter) == 0  # forgotten


def test_a_success_forgets_the_peer_failures() -> None:
    limiter = LoginLimiter(FakeClock())
    for _ in range(5):
        limiter.failed("192.0.2.1")
    limiter.succeeded("192.0.2.1")
    assert limiter.delay("192.0.2.1") == 0.0 and len(limiter) == 0


def test_an_ipv6_peer_is_counted_by_its_64() -> None:
    limiter = LoginLimiter(FakeClock())
    limiter.failed("2001:db8:1:2::1")
    limiter.failed("2001:db8:1:2:ffff::9")
    assert limiter.delay("2001:db8:1:2::77") == 1.0
    assert limiter.delay("2001:db8:1:3::1") == 0.0
    assert peer_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert peer_key("unix-socket") == "unix-socket"


def test_the_limiter_remembers_a_bounded_number_of_peers() -> None:
    limiter = LoginLimiter(FakeClock(), peers=3)
    for n in range(5):
        limiter.failed(f"192.0.2.{n}")
    limiter.failed("192.0.2.2")
    limiter.failed("192.0.2.9")
    assert len(limiter) == 3
    assert limiter.delay("192.0.2.2") == 1.0  # touched again: kept
    assert limiter.delay("192.0.2.0") == limiter.delay("192.0.2.3") == 0.0  # forgotten
    assert repr(limiter) == "<LoginLimiter: 3 peers>"


# --- logins and CSRF -----------------------------------------------------------------------


def test_a_login_is_found_by_its_session_id_with_its_csrf_token() -> None:
    clock = FakeClock()
    sessions = Sessions(clock)
    sid, csrf = sessions.open("alice")
    other, other_csrf = sessions.open("alice")
    assert len({sid, csrf, other, other_csrf}) == 4 and min(map(len, (sid, csrf))) >= 43
    login = sessions.lookup(sid)
    assert login is not None and login.name == "alice" and login.csrf == csrf
    assert login.expires == clock.monotonic() + 3600
    assert sessions.lookup("nonsense") is None and sessions.lookup("") is None
    for shown in (repr(login), repr(sessions), repr(sessions._logins)):
        assert sid not in shown and csrf not in shown
    assert all(sid.encode() not in key for key in sessions._logins)


def test_a_login_ends_after_an_idle_hour_or_twelve_hours_whatever_its_use() -> None:
    clock = FakeClock()
    sessions = Sessions(clock)
    idle, _ = sessions.open("alice")
    clock.advance(3599)
    assert sessions.lookup(idle) is not None  # used: its idle hour starts again
    clock.advance(3599)
    assert sessions.lookup(idle) is not None
    clock.advance(3600)
    assert sessions.lookup(idle) is None
    assert len(sessions) == 0
    busy, _ = sessions.open("bob")
    for _ in range(12 * 60 - 1):
        clock.advance(60)
        assert sessions.lookup(busy) is not None
    login = sessions.lookup(busy)
    assert login is not None and login.expires == clock.monotonic() + 60
    clock.advance(60)
    assert sessions.lookup(busy) is None


def test_logins_are_bounded_the_oldest_ending_first() -> None:
    clock = FakeClock()
    sessions = Sessions(clock, max_logins=3)
    ids = []
    for n in range(5):
        ids.append(sessions.open(f"u{n}")[0])
        clock.advance(1)
    assert len(sessions) == 3
    assert [sessions.lookup(sid) is not None for sid in ids] == [False, False, True, True, True]


def test_close_ends_a_login() -> None:
    sessions = Sessions(FakeClock())
    sid, _ = sessions.open("alice")
    sessions.close(sid)
    sessions.close(sid)
    assert sessions.lookup(sid) is None


def test_retain_ends_logins_whose_name_is_gone_or_whose_token_changed(bob_hash: str) -> None:
    before = Credentials.parse(f"alice:{ALICE}\nbob:{bob_hash}\ncarol:{WRONG}\n", "f")
    after = Credentials.parse(f"alice:{ALICE}\nbob:{hash_token(BOB)}\n", "f")
    sessions = Sessions(FakeClock())
    alice, _ = sessions.open("alice", before.stamp("alice"))
    bob, _ = sessions.open("bob", before.stamp("bob"))
    carol, _ = sessions.open("carol", before.stamp("carol"))
    bob_unstamped, _ = sessions.open("bob")
    assert sessions.retain(after) == 2
    assert sessions.lookup(alice) is not None and sessions.lookup(bob_unstamped) is not None
    assert sessions.lookup(bob) is None and sessions.lookup(carol) is None


CSRF_CASES: list[tuple[Callable[[str], str | None], bool]] = [
    (lambda csrf: csrf, True),
    (lambda csrf: csrf[:-1], False),
    (lambda csrf: csrf + "x", False),
    (lambda csrf: "", False),
    (lambda csrf: None, False),
    (lambda csrf: "é" * 43, False),
]


@pytest.mark.parametrize(("submitted", "ok"), CSRF_CASES)
def test_csrf_ok_takes_only_the_login_own_token(
        submitted: Callable[[str], str | None], ok: bool) -> None:
    sessions = Sessions(FakeClock())
    sid, csrf = sessions.open("alice")
    other, _ = sessions.open("bob")
    login = sessions.lookup(sid)
    assert csrf_ok(login, submitted(csrf)) is ok
    assert not csrf_ok(sessions.lookup(other), csrf)
    assert not csrf_ok(None, csrf)

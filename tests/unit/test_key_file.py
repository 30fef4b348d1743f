"""Reading the key file: never blocking (a FIFO, a device, a directory are refused at
once, with one line naming the file), never reading a huge file on, and one warning when
the file can be read by others than the supervisor."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from supervisor.config.key import KEY_FILE_MAX_BYTES, ApiKeySource
from supervisor.config.load import load_settings
from supervisor.config.problems import ConfigError
from supervisor.runtime.wiring import build, read_key

KEY = "sk_test_Zq8vN3pL7wR2xK9mT4yB6cD1"
FILE_VAR = "WASEND_SUPERVISOR_API_KEY_FILE"


def within(seconds: float, fifo: Path, work: Callable[[], Any]) -> Any:
    """``work()``'s result or exception, which must come within ``seconds``; a read
    blocked on the FIFO is let go (a writer opens and closes it) before failing."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # handed to the test below
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY))  # EOF for the blocked reader
        thread.join(5)
        pytest.fail(f"reading {fifo} blocked for more than {seconds} s")
    assert time.monotonic() - started < seconds
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "wasend_api_key"
    os.mkfifo(path)
    return path


def test_a_fifo_as_api_key_file_is_refused_at_once_in_one_line(fifo: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        within(1.0, fifo, lambda: load_settings(env={FILE_VAR: str(fifo)}, secrets_dirs=[]))
    assert caught.value.problems == [
        f"api_key_file: cannot read {fifo}: not a regular file (a FIFO) "
        f"(from environment variable {FILE_VAR})"
    ]


def test_a_fifo_as_a_secret_file_is_refused_at_once(fifo: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        within(1.0, fifo, lambda: load_settings(env={}, secrets_dirs=[fifo.parent]))
    assert caught.value.problems == [
        f"api_key: cannot read secret file {fifo}: not a regular file (a FIFO)"
    ]


def test_a_key_file_replaced_by_a_fifo_is_refused_at_once_when_re_read(tmp_path: Path) -> None:
    """The re-read after a 401 runs on the daemon's event loop: it must not block."""
    path = tmp_path / "key"
    path.write_text(KEY)
    settings = load_settings(env={FILE_VAR: str(path)}, secrets_dirs=[])
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(ConfigError) as caught:
        within(1.0, path, lambda: read_key(settings))
    assert caught.value.problems == [
        f"api_key_file: cannot read {path}: not a regular file (a FIFO)"
    ]


def test_a_fifo_swapped_in_after_the_check_still_cannot_block(
    fifo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the path is a regular file when looked at, a FIFO when opened. The open
    does not block (O_NONBLOCK) and the open file is refused."""
    regular = fifo.parent / "regular"
    regular.write_text(KEY)
    real_stat = os.stat
    source = ApiKeySource("file", str(fifo))
    with monkeypatch.context() as patched:
        patched.setattr(os, "stat",
                        lambda path, *a, **k: real_stat(regular if path == fifo else path))
        with pytest.raises(ConfigError) as caught:
            within(1.0, fifo, source.read)
    assert caught.value.problems == [
        f"api_key_file: cannot read {fifo}: not a regular file (a FIFO)"
    ]


def test_a_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        ApiKeySource("file", "/dev/null").read()
    assert caught.value.problems == [
        "api_key_file: cannot read /dev/null: not a regular file (a character device)"
    ]


def test_a_huge_key_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"k" * (KEY_FILE_MAX_BYTES + 1))
    with pytest.raises(ConfigError) as caught:
        ApiKeySource("file", str(path)).read()
    assert caught.value.problems == [
        f"api_key_file: cannot read {path}: over {KEY_FILE_MAX_BYTES} bytes, so not a key file"
    ]
    path.write_bytes(b"k" * KEY_FILE_MAX_BYTES)  # the limit itself is read
    assert ApiKeySource("file", str(path)).read() == SecretStr("k" * KEY_FILE_MAX_BYTES)


def test_a_key_file_behind_a_symlink_is_read(tmp_path: Path) -> None:
    """systemd credentials and Kubernetes secrets are often links to the real file."""
    target = tmp_path / "real"
    target.write_text(KEY + "\n")
    link = tmp_path / "key"
    link.symlink_to(target)
    assert ApiKeySource("file", str(link)).read() == SecretStr(KEY)


# --- who else can read it ------------------------------------------------------------

FOREIGN_GID = 54321  # a group this process is not in
assert FOREIGN_GID not in {os.getgid(), *os.getgroups()}


def key_file(tmp_path: Path, mode: int, gid: int | None = None,
             name: str = "key") -> Path:
    path = tmp_path / name
    path.write_text(KEY)
    path.chmod(mode)
    if gid is not None:
        os.chown(path, -1, gid)
    return path


@pytest.mark.parametrize(("mode", "gid", "expected"), [
    (0o600, None, None),
    (0o400, None, None),
    (0o644, None, (0o644, "other users")),
    (0o604, None, (0o604, "other users")),
    (0o640, FOREIGN_GID, (0o640, f"group {FOREIGN_GID}")),
    (0o440, os.getgid(), None),  # the supervisor's own group (a Kubernetes fsGroup)
])
def test_the_exposure_of_a_key_file(
    tmp_path: Path, mode: int, gid: int | None, expected: tuple[int, str] | None
) -> None:
    if gid == FOREIGN_GID and os.geteuid() != 0:
        pytest.skip("only root can give a file to a group it is not in")
    source = ApiKeySource("file", str(key_file(tmp_path, mode, gid)))
    source.read()
    assert source.exposure() == expected


def test_a_systemd_credential_is_never_called_exposed(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o444, name="wasend_api_key")
    settings = load_settings(env={"CREDENTIALS_DIRECTORY": str(tmp_path)},
                             secrets_dirs=[tmp_path])
    source = settings.api_key_source()
    assert source is not None and source.kind == "credential" and source.path == path
    assert source.exposure() is None


def test_one_warning_at_start_none_on_re_reads_and_again_when_it_changes(
    tmp_path: Path,
) -> None:
    path = key_file(tmp_path, 0o644)
    settings = load_settings(env={FILE_VAR: str(path)}, secrets_dirs=[],
                             cli={"state_path": ":memory:"})
    with capture_logs() as events:
        build(settings)
        read_key(settings)
        read_key(settings)  # re-reads after a 401: no repeat
        path.chmod(0o600)
        read_key(settings)
        path.chmod(0o640)
        os.chown(path, -1, FOREIGN_GID)
        read_key(settings)
    warnings = [e for e in events if e["event"] == "api.key_file_permissions"]
    assert warnings == [
        {"event": "api.key_file_permissions", "log_level": "warning", "path": str(path),
         "mode": "0644", "readable_by": "other users", "hint": f"chmod 600 {path}"},
        {"event": "api.key_file_permissions", "log_level": "warning", "path": str(path),
         "mode": "0640", "readable_by": f"group {FOREIGN_GID}", "hint": f"chmod 600 {path}"},
    ]
    assert KEY not in repr(events)


def test_a_key_from_the_environment_is_never_warned_about() -> None:
    settings = load_settings(env={"WASEND_API_KEY": KEY}, secrets_dirs=[],
                             cli={"state_path": ":memory:"})
    with capture_logs() as events:
        build(settings)
    assert not [e for e in events if e["event"] == "api.key_file_permissions"]

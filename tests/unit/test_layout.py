"""The house's rules, read from the code's own imports: each room (a subpackage of
``supervisor``) imports only the rooms below it, the domain no I/O library, and the
simulator nothing of the supervisor."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisor"

# The rooms, and the parts of the supervisor each may import (besides itself). The
# top-level leaves (clock, logs, printable) are shared; cli, __main__, service, demo and
# alert_wiring (the alerts for run and check) put modes together and may import everything.
LEAVES = {"supervisor.clock", "supervisor.logs", "supervisor.printable", "supervisor"}
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "api": {"domain", "state.store", "supervisor.clock", "supervisor"},
    "state": {"domain", "supervisor.clock", "supervisor.printable"},
    "config": {"domain", "state.store"},
    "runtime": {"domain", "api", "state", "config", *LEAVES},
    "ops": {"domain", "api", "state", "config", "runtime", *LEAVES},
    # The alerts: the settings' [alerts] table is what the channels are built from.
    "alerts": {"domain", "state", "config", *LEAVES},
    # The status page: what it shows comes from the rooms below (the sessions as status
    # shows them: state.report; the operator's actions: runtime.operator); it is wired by
    # the top (service).
    "web": {"domain", "api", "state", "config", "runtime.operator", *LEAVES},
    # The webhooks: pure checks and a queue; the supervisor's read is handed in.
    "webhooks": {"domain", *LEAVES},
    "simulator": set(),
}
# What the domain may import from outside the standard library.
DOMAIN_LIBRARIES = {"msgspec"}


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module == "supervisor":  # from supervisor import x: module x
                found.update(f"supervisor.{alias.name}" for alias in node.names)
    return found


def allowed(room: str, module: str) -> bool:
    if module == f"supervisor.{room}" or module.startswith(f"supervisor.{room}."):
        return True
    for part in ALLOWED[room]:
        target = part if part.startswith("supervisor") else f"supervisor.{part}"
        if module == target or module.startswith(f"{target}."):
            return True
    return module == "supervisor" and "supervisor" in ALLOWED[room]


ROOMS = sorted(ALLOWED)


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_imports_only_the_rooms_it_may(room: str) -> None:
    wrong = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in (PACKAGE / room).rglob("*.py")
        for module in imports(path)
        if module.split(".")[0] == "supervisor" and not allowed(room, module)
    )
    assert wrong == []


def test_the_domain_imports_no_io_library() -> None:
    stdlib = sys.stdlib_module_names
    io_modules = {"asyncio", "socket", "sqlite3", "subprocess", "os", "time", "threading",
                  "select", "selectors", "ssl", "http", "urllib", "shutil", "io"}
    wrong = sorted(
        f"{path.name} imports {module}"
        for path in (PACKAGE / "domain").rglob("*.py")
        for module in imports(path)
        if (top := module.split(".")[0]) != "supervisor"
        and (top in io_modules or (top not in stdlib and top not in DOMAIN_LIBRARIES))
    )
    assert wrong == []


def module_level_imports(path: Path) -> set[str]:
    """The modules a file imports at its top level (outside functions and classes)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_the_alerts_import_apprise_only_inside_functions() -> None:
    """A process without alerts never loads Apprise: no alerts module imports it on load."""
    wrong = sorted(
        f"{path.name} imports {module}"
        for path in (PACKAGE / "alerts").rglob("*.py")
        for module in module_level_imports(path)
        if module.split(".")[0] == "apprise"
    )
    assert wrong == []
    assert any(module.split(".")[0] == "apprise"
               for module in imports(PACKAGE / "alerts" / "channels.py"))


def test_psycopg_is_loaded_only_by_the_postgresql_store_and_only_with_state_url() -> None:
    """Without ``state_url`` no process loads psycopg: only ``state/postgres.py`` and the
    replicas' lease (``state/lease.py``) import it, inside a function, and no module
    imports that store on load."""
    wrong = sorted(
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in PACKAGE.rglob("*.py")
        for module in imports(path)
        if module.split(".")[0] == "psycopg"
        and path not in (PACKAGE / "state" / "postgres.py", PACKAGE / "state" / "lease.py")
    )
    wrong += sorted(
        f"{path.relative_to(PACKAGE)} imports {module} on load"
        for path in PACKAGE.rglob("*.py")
        for module in module_level_imports(path)
        if module.split(".")[0] == "psycopg" or module == "supervisor.state.postgres"
    )
    assert wrong == []
    assert "psycopg" in imports(PACKAGE / "state" / "postgres.py")
    assert "psycopg" in imports(PACKAGE / "state" / "lease.py")


def test_every_module_lives_in_a_room_or_is_a_known_leaf_or_entry_point() -> None:
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert top == {"__init__", "__main__", "cli", "service", "demo", "alert_wiring", "clock",
                   "logs", "printable"}
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir()
            and path.name != "__pycache__"} == set(ROOMS)


def test_the_rules_catch_an_arrow_that_runs_back_up(tmp_path: Path) -> None:
    """The checker itself: a domain module importing the runtime is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from supervisor.runtime.cycle import Supervisor\nimport sqlite3\n")
    assert {"supervisor.runtime.cycle", "sqlite3"} <= imports(bad)
    assert not allowed("domain", "supervisor.runtime.cycle")
    assert allowed("runtime", "supervisor.domain.core")
    assert not allowed("state", "supervisor.runtime.check")

"""The tests' own house rules, read from their code: the clock doubles live in
tests/fakes.py and the waits on a condition in tests/waiting.py, and no test module
keeps a copy of its own (a wrapper that calls them, under another name or as a method,
or a clock built on theirs, is fine)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
HOMES = {TESTS / "fakes.py", TESTS / "waiting.py"}
WAITS = {"until", "wait_for"}
CLOCKS = {"FakeClock", "ManualClock", "ShiftableClock"}


def copies(path: Path) -> list[str]:
    """The clock classes and the module-level waits that ``path`` defines."""
    found = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Clock"):
            if not CLOCKS & {ast.unparse(base) for base in node.bases}:
                found.append(f"class {node.name}")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in WAITS:
            found.append(f"def {node.name}")
    return found


def test_the_clock_doubles_and_the_waits_are_written_once() -> None:
    elsewhere = {
        str(path.relative_to(TESTS)): found
        for path in sorted(TESTS.rglob("*.py"))
        if path not in HOMES and (found := copies(path))
    }
    assert elsewhere == {}
    assert copies(TESTS / "fakes.py") == [
        "class FakeClock", "class ManualClock", "class ShiftableClock"]
    assert copies(TESTS / "waiting.py") == ["def until", "def wait_for"]

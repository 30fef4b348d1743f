"""Event names are part of the product: each one lives in ``supervisor.domain.events``,
each one is in the README's event tables, and no module spells one out itself."""

from __future__ import annotations

import re
from pathlib import Path

from supervisor.domain import events

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"`([a-z]+\.[a-z_]+)`")


def declared() -> set[str]:
    return {value for key, value in vars(events).items() if key.isupper()}


def documented() -> set[str]:
    """The names in the first cell of the README's event tables (``| event | level |``)."""
    found: set[str] = set()
    in_table = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| event | level |"):
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table:
            found.update(NAME.findall(line.split("|")[1]))
    return found


def test_every_event_is_declared_once_and_named_as_it_reads() -> None:
    constants = {key: value for key, value in vars(events).items() if key.isupper()}
    assert len(set(constants.values())) == len(constants)
    for key, value in constants.items():
        assert key == value.upper().replace(".", "_")


def test_the_readme_documents_every_event_and_no_other() -> None:
    assert declared() == documented()


def test_no_module_spells_out_an_event_name_itself() -> None:
    pattern = re.compile(r"[\"'](" + "|".join(re.escape(n) for n in declared()) + r")[\"']")
    wrong = sorted(
        f"{path.relative_to(ROOT)}: {match[1]}"
        for path in (ROOT / "supervisor").rglob("*.py")
        if path.name != "events.py" and "simulator" not in path.parts
        for match in pattern.finditer(path.read_text())
    )
    assert wrong == []

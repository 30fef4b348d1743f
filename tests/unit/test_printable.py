"""The one table renderer, for check, status and history."""

from __future__ import annotations

from supervisor.printable import table


def test_a_table_is_columns_two_spaces_apart_with_empty_cells_shown_as_a_dash() -> None:
    assert table(("ID", "NAME", "N"), [("a", None, 1), ("bbb", "", 22)]).splitlines() == [
        "ID   NAME  N",
        "a    -     1",
        "bbb  -     22",
    ]


def test_a_cell_with_controls_stays_on_its_line_and_in_its_column() -> None:
    lines = table(("ID", "NAME"), [("x\nOK: fine\x1b[2J", "n")]).splitlines()
    assert lines == ["ID                  NAME", "x\\nOK: fine\\x1b[2J  n"]

"""``python -m supervisor``: the same as the ``wasend-supervisor`` command."""

from supervisor.cli import entry

entry()

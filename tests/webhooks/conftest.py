"""The webhooks' tests use the end-to-end fixtures (the simulator over real HTTP)."""

from tests.e2e.conftest import simulator

__all__ = ["simulator"]

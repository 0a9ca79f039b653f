"""The worlds the lifecycle tests start from (tests/support/world.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.world import World


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def running(world: World) -> World:
    """A two-node job whose gang runs."""
    world.step()
    world.start_pods()
    world.now += timedelta(seconds=30)
    world.step()
    assert world.status.phase == "Running"
    return world

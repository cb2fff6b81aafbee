"""Process-lifetime helpers: the garbage collector's settings for the run loop."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from driftline.process import settle_heap
from driftline.settings import Settings


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_settle_heap_freezes_the_start_up_heap_and_spaces_young_collections(collector: None) -> None:
    gc.unfreeze()
    kept = [[i] for i in range(1000)]  # start-up objects that survive
    older = gc.get_threshold()[1:]
    settle_heap(10_000)
    assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == (10_000, *older)


def test_zero_leaves_the_collector_as_python_sets_it(collector: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    settle_heap(0)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_the_setting_defaults_and_bounds() -> None:
    assert Settings().gc_threshold == 10_000
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(gc_threshold=-1)

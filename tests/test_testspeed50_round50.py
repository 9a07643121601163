"""The session's objects set aside from the cyclic garbage collector (conftest's ``_set_aside``:
``gc.freeze()`` once the tests are collected): full collections then traverse only what the
tests made, and the tests' own garbage is collected as before."""

from __future__ import annotations

import gc
import weakref


def test_the_objects_alive_after_collection_are_set_aside():
    # frozen at pytest_collection_finish: the imported modules, pytest's items, ...
    assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()


def test_a_cycle_a_test_makes_is_still_collected():
    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
    alive = weakref.ref(a)
    del a, b
    gc.collect()
    assert alive() is None


def test_a_test_that_unfreezes_the_heap():
    gc.unfreeze()  # as test_sweep.py's memory test does
    assert gc.get_freeze_count() == 0


def test_the_next_test_finds_the_heap_set_aside_again():
    # conftest's pytest_runtest_teardown froze it again after the test above
    assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()

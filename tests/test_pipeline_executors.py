"""Executors: a worker that dies loses only its own item (real process pool)."""

from __future__ import annotations

import os

from biomarkers.executors import get_executor


def square_or_die(x: int) -> int:
    """Top-level (picklable) work function: item 3 kills its worker process."""
    if x == 3:
        os._exit(17)
    return x * x


def test_local_pool_loses_only_the_item_whose_worker_died():
    with get_executor("local:2") as ex:
        outcomes = {o.key: o for o in ex.map_unordered(square_or_die, [(str(i), i) for i in range(8)])}
        # the pool still works after the break
        again = [o.value for o in ex.map_unordered(square_or_die, [("9", 9)])]
    assert set(outcomes) == {str(i) for i in range(8)}
    assert not outcomes["3"].ok and "worker process died" in outcomes["3"].error
    assert {k: o.value for k, o in outcomes.items() if k != "3"} == {str(i): i * i for i in range(8) if i != 3}
    assert again == [81]


def test_serial_and_local_agree():
    items = [(str(i), i) for i in range(5)]
    with get_executor("serial") as s, get_executor("local:2") as loc:
        a = {o.key: o.value for o in s.map_unordered(abs, items)}
        b = {o.key: o.value for o in loc.map_unordered(abs, items)}
    assert a == b == {str(i): i for i in range(5)}

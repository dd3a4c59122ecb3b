"""The benchmark's independent parts, two at a time (the machine has two cores)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def in_two_processes(function: Callable[..., T], items: Iterable[Any], *same: Any) -> list[T]:
    """``[function(item, *same) for item in items]``, in two forked processes. Forked, so a
    worker finds the parent's module state (scenarios that hold closures do not pickle);
    each result depends only on its arguments, not on which process made it."""
    items = list(items)
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(function, items, *([value] * len(items) for value in same)))

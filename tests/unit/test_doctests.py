"""Every ``Examples`` block in streamwatch's docstrings runs, as river's do."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamwatch

MODULES = [m.name for m in pkgutil.walk_packages(streamwatch.__path__, "streamwatch.")]


@pytest.mark.parametrize("name", [m for m in MODULES if m != "streamwatch.__main__"])
def test_examples_in_docstrings_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0

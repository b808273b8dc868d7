"""Every registered ``otgate bench`` module imports and has what the command calls
(a renamed helper in one bench once broke another bench that nothing ran)."""

from __future__ import annotations

import importlib
import inspect

import pytest

from otgate.simulations.cmd_bench import BENCHES


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_module_imports_with_title_and_run(name: str) -> None:
    module = importlib.import_module(BENCHES[name])
    assert isinstance(module.TITLE, str) and module.TITLE
    assert inspect.iscoroutinefunction(module.run)

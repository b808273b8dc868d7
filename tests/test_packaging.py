"""The wheel must contain every package: pyproject lists them explicitly
(folders at the root map to otgate.<folder>), so a new one must be added."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = ("actors", "supervisors", "protocols", "sinks", "config", "simulations")


def test_every_package_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {"otgate"} | set(setuptools["package-data"])  # data-only folders are packages too
    for top in LAYOUT:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("otgate." + ".".join(rel.parts))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "listed but missing"

"""Shared pytest configuration: anyio runs on asyncio (the gateway's backend);
tests marked ``long`` (the long variants of slow checks) run only with
``--long`` (or ``OTGATE_LONG_TESTS=1``): ``bash tests/run.sh --long``."""

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=os.environ.get("OTGATE_LONG_TESTS") == "1",
        help="also run the long variants (tests marked long)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --long (or OTGATE_LONG_TESTS=1)")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

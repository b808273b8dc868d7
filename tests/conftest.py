"""Shared pytest configuration: anyio runs on asyncio (the gateway's backend)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

"""The standard suite's async tests are plain `async def` methods, which its own projects run
under pytest-asyncio's auto mode; turn that on here so the shared pytest.ini stays as it is."""

from __future__ import annotations


def pytest_configure(config):
    config.option.asyncio_mode = "auto"

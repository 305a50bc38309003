"""Shared fixtures.  Each group of fixtures lives in its own plugin module."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import triofetch

pytest_plugins = ["tests._fixtures_http", "tests._fixtures_pg", "tests.rawserver"]

settings.register_profile(
    "ci", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "stress", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
async def dl() -> AsyncIterator[triofetch.Downloader]:
    """An open downloader of 8 connections that retries once, after a hundredth of a second."""
    async with triofetch.Downloader(connections=8, backoff=0.01, retries=1) as d:
        yield d


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the run's ``mypy --strict`` checks of a user's code: the first
    check reads triofetch, trio and the rest (about 3 s), the next ones only the user's
    module (a fraction of a second).  Outside the checkout, so that a run leaves nothing."""
    return tmp_path_factory.mktemp("mypy-cache")

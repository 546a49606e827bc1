"""Fixtures of the golden tests: the ``--update-golden`` switch and the registry they run."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard._paths import default_config_path


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True under ``pytest --update-golden``: rewrite the snapshots instead of comparing."""
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def golden_config() -> Path:
    """The shipped registry, models and contracts: the golden runs pin what users run."""
    return default_config_path()

"""Where the registry, contracts, bundled bars and shipped models live.

In a source checkout (editable install) they sit at the repository root; a wheel carries
them under ``modelyard/_bundle``. ``MODELYARD_HOME`` overrides both.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

__all__ = ["default_config_path", "project_root"]

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def project_root() -> Path:
    """The folder that holds ``config/``, ``data/`` and ``models/``."""
    env = os.environ.get("MODELYARD_HOME")
    candidates = [Path(env)] if env else []
    candidates += [_PACKAGE_DIR / "_bundle", _PACKAGE_DIR.parents[1]]
    for candidate in candidates:
        if (candidate / "config" / "assets.yaml").is_file():
            return candidate
    return candidates[-1]


def default_config_path() -> Path:
    """``config/assets.yaml`` of the project root."""
    return project_root() / "config" / "assets.yaml"

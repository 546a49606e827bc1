"""Adapt a model's data contract into the fast row and batch checks the router runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.config.schema import ModelConfig

__all__ = ["ContractCheck", "contract_check"]


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """Fast per-row and per-batch contract checks for one model's feature order."""

    row: Callable[[npt.NDArray[Any]], str | None]  # None when the row is fine
    batch: Callable[[npt.NDArray[Any]], npt.NDArray[np.bool_]]  # True where a row is bad


def contract_check(spec: ModelConfig) -> ContractCheck | None:
    """The checks for ``spec``'s contract file, or None when the model declares none."""
    if spec.contract is None:
        return None
    from modelyard.models.contracts import frame_violations, load_contract, row_violations

    contract = load_contract(spec.contract)
    names = list(spec.features)
    return ContractCheck(
        row=row_violations(contract, names),
        batch=lambda x: frame_violations(contract, x, names),
    )

"""modelyard: route each symbol to its ML model; backtest, compare and paper-trade one strategy."""

from modelyard.config import AssetsConfig, load_config
from modelyard.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    ContractViolation,
    DataError,
    InvalidSymbolError,
    ModelError,
    ModelLoadError,
    ModelyardError,
    OrderRejected,
    ParityError,
    RiskLimitBreached,
    RoutingError,
)

__version__ = "0.1.0"

__all__ = [
    "AssetsConfig",
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "ContractViolation",
    "DataError",
    "InvalidSymbolError",
    "ModelError",
    "ModelLoadError",
    "ModelyardError",
    "OrderRejected",
    "ParityError",
    "RiskLimitBreached",
    "RoutingError",
    "__version__",
    "load_config",
]

"""The modelyard error tree.

Everything the package raises on purpose derives from :class:`ModelyardError`, so a
caller can catch one type. The tree separates what an operator must act on
(``ConfigError``, ``OrderRejected``) from what may be retried
(``BrokerUnavailable``). Vendor exceptions are mapped at the boundary with
``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "ContractViolation",
    "DataError",
    "FeatureMismatchError",
    "InvalidSymbolError",
    "ModelError",
    "ModelLoadError",
    "ModelyardError",
    "OrderRejected",
    "ParityError",
    "RiskLimitBreached",
    "RoutingError",
]


class ModelyardError(Exception):
    """Base class of every error raised by modelyard on purpose."""


class ConfigError(ModelyardError):
    """Bad or inconsistent configuration; the message names the file and the key."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        self.path = path
        self.key = key
        parts = []
        if path is not None:
            parts.append(str(path))
        if key is not None:
            parts.append(f"key '{key}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class InvalidSymbolError(ModelyardError, ValueError):
    """A symbol that is empty or cannot be a tradable symbol."""


class DataError(ModelyardError, ValueError):
    """Bars that break the bar schema, or data that cannot be found or read."""


class ContractViolation(ModelyardError):
    """A feature frame breaks its data contract.

    ``column``, ``rule``, ``count`` and ``first`` (the first offending timestamps) say
    exactly where.
    """

    def __init__(
        self,
        message: str,
        *,
        column: str | None = None,
        rule: str | None = None,
        count: int = 0,
        first: tuple[object, ...] = (),
    ) -> None:
        self.column = column
        self.rule = rule
        self.count = count
        self.first = first
        super().__init__(message)


class ModelError(ModelyardError):
    """A model cannot be used."""


class ModelLoadError(ModelError):
    """A missing or corrupt ONNX file, a wrong input shape, or a sha256 mismatch."""


class FeatureMismatchError(ModelLoadError):
    """The model's inputs do not match the feature list the registry declares for it."""


class ParityError(ModelError):
    """The ONNX export and the fitted model disagree beyond tolerance."""


class RoutingError(ModelyardError):
    """Strict mode: no usable model for a symbol."""


class BrokerError(ModelyardError):
    """Anything that went wrong between us and the venue."""


class OrderRejected(BrokerError):
    """The venue said no. Not retried: an operator or the strategy must act."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class BrokerUnavailable(BrokerError):
    """Timeouts, 429 and 5xx. Retried with backoff."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RiskLimitBreached(BrokerError):
    """The risk engine refused an order before it left the process."""

    def __init__(self, message: str, *, rule: str | None = None) -> None:
        self.rule = rule
        super().__init__(message)

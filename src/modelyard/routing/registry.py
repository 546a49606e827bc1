"""The model registry: each model's file, features and sha256; lazy, once-only loading."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from modelyard.config.schema import AssetsConfig, ModelConfig
from modelyard.errors import ModelLoadError
from modelyard.models.cards import read_card
from modelyard.models.onnx_model import OnnxModel

__all__ = ["ModelRegistry"]

log = logging.getLogger(__name__)


class ModelRegistry:
    """Loads each model lazily on first use, exactly once, even under concurrent callers.

    A failed load is remembered and re-raised, so a broken file is not re-read on every
    prediction. :meth:`reset` forgets everything (e.g. after ``modelyard train``).
    """

    def __init__(self, config: AssetsConfig) -> None:
        self._specs: dict[str, ModelConfig] = dict(config.models)
        self._loaded: dict[str, OnnxModel] = {}
        self._failed: dict[str, ModelLoadError] = {}
        self._locks: dict[str, threading.Lock] = {mid: threading.Lock() for mid in self._specs}
        self._sha_cache: dict[str, str | None] = {}
        self.load_count: dict[str, int] = dict.fromkeys(self._specs, 0)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, model_id: str) -> ModelConfig:
        try:
            return self._specs[model_id]
        except KeyError:
            raise ModelLoadError(
                f"unknown model id '{model_id}'; defined: {', '.join(sorted(self._specs))}"
            ) from None

    def path(self, model_id: str) -> Path:
        return self.spec(model_id).path

    def exists(self, model_id: str) -> bool:
        return self.path(model_id).is_file()

    def file_sha256(self, model_id: str) -> str | None:
        """The sha256 of the model's file as it is on disk (None when missing); cached."""
        if model_id in self._loaded:
            return self._loaded[model_id].sha256
        if model_id not in self._sha_cache:
            path = self.path(model_id)
            self._sha_cache[model_id] = (
                hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            )
        return self._sha_cache[model_id]

    def get(self, model_id: str) -> OnnxModel:
        """The loaded model; loads it on first call. Raises ``ModelLoadError`` if it cannot."""
        model = self._loaded.get(model_id)
        if model is not None:
            return model
        spec = self.spec(model_id)
        with self._locks[model_id]:
            model = self._loaded.get(model_id)
            if model is not None:
                return model
            failed = self._failed.get(model_id)
            if failed is not None:
                raise failed
            self.load_count[model_id] += 1
            try:
                model = OnnxModel(
                    spec.path,
                    model_id=model_id,
                    expected_sha256=self._expected_sha256(model_id),
                    expected_features=spec.features,
                )
            except ModelLoadError as exc:
                self._failed[model_id] = exc
                raise
            log.info("loaded model %s from %s (sha256 %s)", model_id, spec.path, model.sha256)
            self._loaded[model_id] = model
            return model

    def _expected_sha256(self, model_id: str) -> str | None:
        """The registry's sha256, else the one in the model card beside the file."""
        spec = self.spec(model_id)
        if spec.sha256 is not None:
            return spec.sha256
        card = read_card(spec.path) if spec.path.is_file() else None
        return card.sha256 if card is not None else None

    def reset(self) -> None:
        """Forget loaded sessions and remembered failures."""
        for model_id in self._specs:
            with self._locks[model_id]:
                self._loaded.pop(model_id, None)
                self._failed.pop(model_id, None)
        self._sha_cache.clear()

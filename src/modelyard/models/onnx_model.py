"""A loaded ONNX model: one single-threaded onnxruntime session plus what the file declares."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.errors import FeatureMismatchError, ModelLoadError

__all__ = ["FEATURES_METADATA_KEY", "OnnxModel", "file_sha256"]

log = logging.getLogger(__name__)

FEATURES_METADATA_KEY = "modelyard.features"
_DTYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread and sequential execution: the same bytes in give the same bits out.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return options


class OnnxModel:
    """One ONNX file loaded into onnxruntime.

    The file must have one 2-D input ``[batch, n_features]`` of float or double. When the
    model carries ``modelyard.features`` metadata (a JSON list), it must equal
    ``expected_features``; the input width must equal their count in any case.
    """

    __slots__ = (
        "_input",
        "_outputs",
        "_session",
        "dtype",
        "feature_names",
        "metadata",
        "model_id",
        "n_features",
        "path",
        "sha256",
    )

    def __init__(
        self,
        path: str | Path,
        *,
        model_id: str,
        expected_sha256: str | None = None,
        expected_features: Sequence[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.model_id = model_id
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelLoadError(
                f"model '{model_id}': file {self.path} does not exist; "
                f"run `modelyard train --model {model_id.split('_')[0]}` or fix its path"
            ) from exc
        except OSError as exc:
            raise ModelLoadError(f"model '{model_id}': cannot read {self.path}: {exc}") from exc
        self.sha256 = hashlib.sha256(data).hexdigest()
        if expected_sha256 is not None and self.sha256 != expected_sha256:
            raise ModelLoadError(
                f"model '{model_id}': {self.path} has sha256 {self.sha256} but the registry "
                f"expects {expected_sha256}; the file was changed or replaced — retrain it "
                "or update the sha256 in assets.yaml"
            )
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(
                data, _session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(
                f"model '{model_id}': onnxruntime cannot load {self.path}: "
                f"{str(exc).splitlines()[0][:300]}"
            ) from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"model '{model_id}': {self.path} has {len(inputs)} inputs; expected one"
            )
        shape = inputs[0].shape
        if len(shape) != 2 or not isinstance(shape[1], int):
            raise ModelLoadError(
                f"model '{model_id}': input shape {shape} is not [batch, n_features]"
            )
        dtype = _DTYPES.get(inputs[0].type)
        if dtype is None:
            raise ModelLoadError(
                f"model '{model_id}': input type {inputs[0].type} is not float or double"
            )
        self.dtype: type[np.floating[Any]] = dtype
        self.n_features: int = shape[1]
        self._input: str = inputs[0].name
        self._outputs: list[str] = [self._session.get_outputs()[0].name]
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)
        declared = self.metadata.get(FEATURES_METADATA_KEY)
        self.feature_names: tuple[str, ...] | None = (
            tuple(json.loads(declared)) if declared else None
        )
        if expected_features is not None:
            self._check_features(tuple(expected_features))

    def _check_features(self, expected: tuple[str, ...]) -> None:
        if self.n_features != len(expected):
            raise FeatureMismatchError(
                f"model '{self.model_id}': {self.path} takes {self.n_features} features but "
                f"the registry lists {len(expected)}"
            )
        if self.feature_names is not None and self.feature_names != expected:
            diff = [
                f"#{i}: model {a!r} vs config {b!r}"
                for i, (a, b) in enumerate(zip(self.feature_names, expected, strict=True))
                if a != b
            ]
            raise FeatureMismatchError(
                f"model '{self.model_id}': feature names differ from the registry "
                f"({'; '.join(diff[:3])})"
            )

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Predict a 2-D batch (or one 1-D row); returns a 1-D float64 array."""
        arr = np.asarray(x, dtype=self.dtype)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        out = self._session.run(self._outputs, {self._input: arr})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def run_raw(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``session.run`` on an array already of :attr:`dtype` and shape; no conversion."""
        result: npt.NDArray[Any] = self._session.run(self._outputs, {self._input: x})[0]
        return result

    def __repr__(self) -> str:
        return (
            f"OnnxModel(id={self.model_id!r}, path={str(self.path)!r}, "
            f"features={self.n_features}, sha256={self.sha256[:12]}…)"
        )

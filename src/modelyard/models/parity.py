"""The parity gate: onnxruntime must predict what the fitted pipeline predicts."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from modelyard.errors import ParityError

__all__ = ["RELATIVE_TOLERANCE", "check_parity"]

# Maximum |onnx - sklearn| allowed, as a fraction of the predictions' standard deviation.
RELATIVE_TOLERANCE = 1e-5


def check_parity(
    pipeline: Any, onnx_bytes: bytes, x: npt.NDArray[np.float64], *, model_id: str
) -> float:
    """Max abs difference between the pipeline and the ONNX model on ``x``.

    Raises :class:`ParityError` when it exceeds ``1e-5 × std(predictions)`` (or, when the
    predictions are constant, ``1e-12 × max(1, |prediction|)``).
    """
    import onnxruntime as ort

    from modelyard.models.onnx_model import _session_options

    if len(x) == 0:
        raise ParityError(f"model '{model_id}': no held-out rows to check parity on")
    expected = np.asarray(pipeline.predict(x), dtype=np.float64).ravel()
    session = ort.InferenceSession(
        onnx_bytes, _session_options(), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    got = np.asarray(session.run(None, {name: np.ascontiguousarray(x)})[0], np.float64).ravel()
    diff = float(np.max(np.abs(got - expected)))
    spread = float(np.std(expected))
    limit = (
        RELATIVE_TOLERANCE * spread
        if spread > 0
        else 1e-12 * max(1.0, float(np.max(np.abs(expected))))
    )
    if not diff <= limit:
        raise ParityError(
            f"model '{model_id}': ONNX and the fitted pipeline differ by {diff:.3g} on "
            f"{len(x)} held-out rows; the limit is {limit:.3g} (1e-5 × std {spread:.3g}). "
            "No file was written."
        )
    return diff

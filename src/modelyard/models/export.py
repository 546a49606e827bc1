"""Export a fitted scikit-learn pipeline to ONNX (double precision) with modelyard metadata."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from modelyard.models.onnx_model import FEATURES_METADATA_KEY

__all__ = ["INTERFACE_VERSION", "to_onnx_bytes"]

# Bumped when the meaning of the model's input or output changes.
INTERFACE_VERSION = "1"


def to_onnx_bytes(
    pipeline: Any,
    feature_names: Sequence[str],
    *,
    model_id: str,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Convert ``pipeline`` (input ``[batch, len(feature_names)]`` of float64) to ONNX bytes.

    The bytes are deterministic for the same fitted pipeline: no timestamps, fixed names.
    """
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    onx = convert_sklearn(
        pipeline,
        name=model_id,
        initial_types=[("features", DoubleTensorType([None, len(feature_names)]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    entries = {
        "modelyard.model_id": model_id,
        FEATURES_METADATA_KEY: json.dumps(list(feature_names)),
        "modelyard.interface_version": INTERFACE_VERSION,
        **(dict(metadata) if metadata else {}),
    }
    del onx.metadata_props[:]
    for key in sorted(entries):
        prop = onx.metadata_props.add()
        prop.key = key
        prop.value = entries[key]
    onx.producer_name = "modelyard"
    onx.producer_version = INTERFACE_VERSION
    onx.doc_string = ""
    data: bytes = onx.SerializeToString(deterministic=True)
    onnx.checker.check_model(onnx.load_from_string(data))
    return data

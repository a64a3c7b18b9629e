"""Tiny stand-ins for the release's ONNX front-end models, with the same inputs and outputs.

- speech tokenizer: feats (1, 128, T) float + feats_length (1,) int32 -> tokens (1, ceil(T/4))
  int64 (25 tokens per second from 100 mel frames per second): every 4th frame projected
  by a fixed matrix, arg-max over 64 codes.
- speaker encoder: fbank (1, T, 80) -> embedding (1, 192): the time mean, projected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def tokenizer_matrix() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((128, 64)).astype(np.float32)


def speaker_matrix() -> np.ndarray:
    return np.random.default_rng(2).standard_normal((80, 192)).astype(np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_speech_tokenizer(path: Path) -> Path:
    ints = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Transpose", ["feats"], ["frames"], perm=[0, 2, 1]),
        helper.make_node("Slice", ["frames", "start", "end", "axis", "step"], ["every4"]),
        helper.make_node("MatMul", ["every4", "W"], ["scores"]),
        helper.make_node("ArgMax", ["scores"], ["tokens"], axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "speech_tokenizer_stand_in",
        [
            helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, 128, "T"]),
            helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1]),
        ],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"])],
        [
            ints("start", [0]),
            ints("end", [2**62]),
            ints("axis", [1]),
            ints("step", [4]),
            numpy_helper.from_array(tokenizer_matrix(), "W"),
        ],
    )
    return _save(graph, path)


def write_speaker_encoder(path: Path) -> Path:
    nodes = [
        helper.make_node("ReduceMean", ["fbank"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "campplus_stand_in",
        [helper.make_tensor_value_info("fbank", TensorProto.FLOAT, [1, "T", 80])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 192])],
        [numpy_helper.from_array(speaker_matrix(), "W")],
    )
    return _save(graph, path)

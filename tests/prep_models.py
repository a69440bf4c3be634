"""Tiny stand-ins for the upstream preprocessing models, with the real input/output signatures (built in tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def colour_parsing_onnx(
    path: Path,
    classes: int,
    rules: dict[int, int | tuple[float, float, float]],
    size: int | None = 64,
    input_name: str = "input.1",
    background: float = 0.0,
) -> Path:
    """An SCHP-shaped parser: (1, 3, S, S) -> parsing, fusion (1, C, S/4, S/4), edge (1, 2, S/4, S/4).

    ``fusion`` scores class ``c`` by the normalised value of input channel ``rules[c]`` (0 = B, 1 = G, 2 = R in the
    BGR input; or a (B, G, R) weight triple), background by the constant ``background``, every other class by -10:
    a pure red photo region becomes the class ruled by channel 2. ``parsing`` is the negated fusion (so reading the
    wrong output gives wrong labels).
    ``size=None`` leaves the spatial dimensions dynamic.
    """
    weight = np.zeros((classes, 3, 1, 1), dtype=np.float32)
    bias = np.full(classes, -10.0, dtype=np.float32)
    bias[0] = background
    for label, channel in rules.items():
        if isinstance(channel, int):
            weight[label, channel] = 1.0
        else:
            weight[label, :, 0, 0] = channel
        bias[label] = 0.0
    dims = [1, 3, size, size] if size else [1, 3, "height", "width"]
    out_dims = [1, classes, size // 4, size // 4] if size else [1, classes, "h", "w"]
    edge_dims = [1, 2, size // 4, size // 4] if size else [1, 2, "h", "w"]
    nodes = [
        helper.make_node("AveragePool", [input_name], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["fusion"]),
        helper.make_node("Neg", ["fusion"], ["parsing"]),
        helper.make_node("Conv", ["pooled", "we"], ["edge"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_schp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("parsing", TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info("fusion", TensorProto.FLOAT, out_dims),
         helper.make_tensor_value_info("edge", TensorProto.FLOAT, edge_dims)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
         numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "we")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path

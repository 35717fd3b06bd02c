"""The neural family as one ONNX graph: the last hour of all sensors in, every forecast out.

Inputs `speeds` (batch, LOOKBACK, sensors) float32 mph with NaN for missing readings and
`clock` (batch, len(CLOCK_NAMES)) float32; output `forecast` (batch, len(HORIZONS), sensors)
mph. Standardization, the missing-reading mask and the graph supports (the learned adaptive
adjacency included, fixed after training) are inside the graph, so a caller hands over raw
speeds. Built node by node from the weights (numpy only), mirroring `neural.forward` op for
op; the parity test holds the two together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from traffic_core.features import CLOCK_NAMES, HORIZONS, LOOKBACK
from traffic_core.models.neural import diffusion_parts

OPSET = 17
SPEEDS, CLOCK, FORECAST = "speeds", "clock", "forecast"


def adaptive_adjacency(node_a: np.ndarray, node_b: np.ndarray) -> np.ndarray:
    """softmax(relu(node_a @ node_b)) by rows, as the network computes it."""
    scores = np.maximum(node_a.astype("float64") @ node_b.astype("float64"), 0.0)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (scores / scores.sum(axis=1, keepdims=True)).astype("float32")


class _Graph:
    """Accumulates nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: Any) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def conv(self, h: str, weight: np.ndarray, bias: np.ndarray, dilation: int = 1) -> str:
        if weight.ndim == 2:
            weight = weight[:, :, None, None]
        w, b = self.const("w", weight.astype("float32")), self.const("b", bias.astype("float32"))
        return self.op("Conv", h, w, b, dilations=[1, dilation])

    def last_steps(self, h: str, steps: int, axis: int) -> str:
        starts, ends = self.const("starts", [-steps]), self.const("ends", [np.iinfo("int64").max])
        return self.op("Slice", h, starts, ends, self.const("axes", [axis]))


def to_onnx(
    params: dict[str, np.ndarray],
    statics: dict[str, Any],
    sensors: int,
) -> onnx.ModelProto:
    """The trained network (`NeuralModel.params`, `.statics()`) as a checked ONNX model."""
    g = _Graph()
    mean = g.const("mean", np.float32(statics["mean"]))
    std = g.const("std", np.float32(statics["std"]))
    present = g.op("Not", g.op("IsNaN", SPEEDS))
    scaled = g.op("Div", g.op("Sub", SPEEDS, mean), std)
    x = g.op("Where", present, scaled, g.const("zero", np.float32(0.0)))  # (B, T, N)
    planes = [
        g.op("Unsqueeze", g.op("Transpose", v, perm=[0, 2, 1]), g.const("axes", [1]))
        for v in (x, g.op("Cast", present, to=TensorProto.FLOAT))
    ]  # (B, 1, N, T) each
    clock = g.op(
        "Expand", g.op("Unsqueeze", CLOCK, g.const("axes", [2, 3])), g.op("Shape", planes[0])
    )
    h = g.conv(g.op("Concat", *planes, clock, axis=1), params["start_w"], params["start_b"])

    adaptive = adaptive_adjacency(params["node_a"], params["node_b"])
    transposed = [g.const("support_t", s.T.copy()) for s in [*statics["supports"], adaptive]]
    skip = None
    steps = LOOKBACK
    for layer, dilation in enumerate(statics["dilations"]):
        steps -= dilation
        gated = g.op(
            "Mul",
            g.op(
                "Tanh", g.conv(h, params[f"filter{layer}_w"], params[f"filter{layer}_b"], dilation)
            ),
            g.op(
                "Sigmoid", g.conv(h, params[f"gate{layer}_w"], params[f"gate{layer}_b"], dilation)
            ),
        )
        s = g.conv(
            g.last_steps(gated, 1, axis=3), params[f"skip{layer}_w"], params[f"skip{layer}_b"]
        )
        skip = s if skip is None else g.op("Add", skip, s)
        rows = g.op("Transpose", gated, perm=[0, 1, 3, 2])  # (B, C, T, N): sensors last
        # rows @ S.T is S applied over sensors, as the network's einsum does
        parts = diffusion_parts(
            rows, transposed, statics["diffusion_steps"], lambda s_t, x: g.op("MatMul", x, s_t)
        )
        mixed_in = g.op("Transpose", g.op("Concat", *parts, axis=1), perm=[0, 1, 3, 2])
        mixed = g.conv(mixed_in, params[f"mix{layer}_w"], params[f"mix{layer}_b"])
        h = g.op("Add", mixed, g.last_steps(h, steps, axis=3))
    assert skip is not None
    out = g.op("Relu", g.conv(g.op("Relu", skip), params["end1_w"], params["end1_b"]))
    change = g.op("Squeeze", g.conv(out, params["end2_w"], params["end2_b"]), g.const("axes", [3]))
    latest = g.last_steps(x, 1, axis=1)  # (B, 1, N)
    g.nodes.append(
        helper.make_node("Add", [g.op("Mul", g.op("Add", change, latest), std), mean], [FORECAST])
    )
    graph = helper.make_graph(
        g.nodes,
        "graph_wavenet",
        [
            helper.make_tensor_value_info(SPEEDS, TensorProto.FLOAT, ["batch", LOOKBACK, sensors]),
            helper.make_tensor_value_info(CLOCK, TensorProto.FLOAT, ["batch", len(CLOCK_NAMES)]),
        ],
        [
            helper.make_tensor_value_info(
                FORECAST, TensorProto.FLOAT, ["batch", len(HORIZONS), sensors]
            )
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model

"""Small graph-editing helpers shared by the Q/DQ passes (onnx-graphsurgeon): import / export a model, read
constants and quantization parameters, add constants and nodes with unique names.

Constants may be initializers or ``Constant`` nodes (also behind ``Identity``, as the TorchScript exporter shares
them); every reader returns None for a value computed at run time.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

__all__ = [
    "import_graph",
    "export_graph",
    "const_value",
    "is_activation_q",
    "dq_consumers",
    "input_q",
    "per_tensor_input_dq",
    "output_qs",
    "scale_of",
    "zero_point_of",
    "node_label",
    "same_values",
    "new_constant",
    "new_node",
    "replace_input",
    "conv_integer_weight",
]


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """A graphsurgeon graph of a copy of ``model`` (the caller's model is never mutated)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return gs.import_onnx(copy)


def export_graph(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """``graph`` cleaned up and exported with the opset, IR version, producer and metadata of ``like``; checked."""
    graph.cleanup()
    out = gs.export_onnx(graph, do_type_check=False)
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    out.ir_version = like.ir_version
    out.producer_name, out.producer_version = like.producer_name, like.producer_version
    out.metadata_props.extend(like.metadata_props)
    onnx.checker.check_model(out)
    return out


def const_value(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of an initializer or of a ``Constant`` node's output (also behind Identity), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    producer = tensor.inputs[0] if tensor.inputs else None
    if producer is not None and producer.op == "Identity":  # the TorchScript exporter shares constants this way
        return const_value(producer.inputs[0])
    if producer is None or producer.op != "Constant":
        return None
    for key, value in producer.attrs.items():
        if key == "value":
            return np.asarray(value.values)
        if key in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if key in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
    return None


def is_activation_q(node: gs.Node) -> bool:
    """True for a QuantizeLinear whose data input is not a constant."""
    return node.op == "QuantizeLinear" and const_value(node.inputs[0]) is None


def dq_consumers(q: gs.Node) -> list[gs.Node]:
    """The DequantizeLinear nodes fed by ``q`` (other consumers are ignored)."""
    return [node for node in q.outputs[0].outputs if node.op == "DequantizeLinear"]


def input_q(tensor: gs.Tensor) -> gs.Node | None:
    """The activation Q behind ``tensor`` when it is the output of DQ(Q(x)), else None."""
    dq = tensor.inputs[0] if tensor.inputs else None
    if dq is None or dq.op != "DequantizeLinear":
        return None
    q = dq.inputs[0].inputs[0] if dq.inputs[0].inputs else None
    return q if q is not None and is_activation_q(q) else None


def per_tensor_input_dq(node: gs.Node) -> gs.Node | None:
    """The DQ of ``node``'s first input when it is DQ(Q(x)) with a constant per-tensor scale and zero point."""
    if input_q(node.inputs[0]) is None:
        return None
    dq = node.inputs[0].inputs[0]
    scale = scale_of(dq)
    return dq if scale is not None and scale.size == 1 and zero_point_of(dq) is not None else None


def output_qs(tensor: gs.Tensor) -> list[gs.Node]:
    """The activation Qs that consume ``tensor`` directly (as their data input)."""
    return [node for node in tensor.outputs if node.op == "QuantizeLinear" and node.inputs[0] is tensor]


def scale_of(node: gs.Node) -> np.ndarray | None:
    """The constant scale of a Q/DQ node (None when computed at run time)."""
    return const_value(node.inputs[1])


def zero_point_of(node: gs.Node) -> np.ndarray | None:
    """The constant zero point of a Q/DQ node (None when absent or computed)."""
    return const_value(node.inputs[2]) if len(node.inputs) > 2 else None


def node_label(node: gs.Node) -> str:
    """The node's name, or ``<Op -> first output>`` for unnamed nodes."""
    return node.name or f"<{node.op} -> {node.outputs[0].name if node.outputs else '?'}>"


def same_values(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Equal dtype and values, treating shapes ``()`` and ``(1,)`` alike (both mean per-tensor)."""
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.size == b.size and np.array_equal(a.reshape(-1), b.reshape(-1))


def new_constant(graph: gs.Graph, hint: str, values: np.ndarray) -> gs.Constant:
    """A new constant named ``hint`` (``hint_1``... if taken); the caller wires it in."""
    names = set(graph.tensors())
    name, index = hint, 0
    while name in names:
        index += 1
        name = f"{hint}_{index}"
    return gs.Constant(name, np.array(values, copy=True))  # keeps 0-d (ascontiguousarray would not)


def replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    """Every input slot of ``node`` that holds ``old`` now holds ``new``."""
    for index, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[index] = new


def new_node(graph: gs.Graph, op: str, source: gs.Tensor, params: list[gs.Tensor], dtype: np.dtype) -> gs.Node:
    """Append ``op(source, *params)`` with one new output of ``dtype``, named after ``source``."""
    names = set(graph.tensors())
    name, index = f"{source.name}_{op}", 0
    while name in names:
        index += 1
        name = f"{source.name}_{op}_{index}"
    output = gs.Variable(name, dtype=dtype)
    graph.nodes.append(gs.Node(op, name=f"{name}_node", inputs=[source, *params], outputs=[output]))
    return graph.nodes[-1]


def conv_integer_weight(conv: gs.Node) -> tuple[gs.Node, np.ndarray] | None:
    """The conv's weight DQ and its constant integer weight ``(Cout, Cin, *kernel)`` (int8 or uint8), if it has one."""
    producer = conv.inputs[1].inputs[0] if conv.inputs[1].inputs else None
    if producer is None or producer.op != "DequantizeLinear":
        return None
    weight = const_value(producer.inputs[0])
    if weight is None or weight.dtype not in (np.int8, np.uint8) or weight.ndim < 3:
        return None
    return producer, weight

"""An independent reference for every layer call: plain Keras sub-models.

For each node of a functional graph, ``keras.Model(graph.inputs, node.outputs)``
computes exactly that call's outputs with Keras's own graph execution and
``predict``; nested models are entered by computing their inputs the same way.
Slow (one model per node) but obviously right, and it shares no code with
``kerinspect.engine.trace``.
"""

from __future__ import annotations

import numpy as np

from kerinspect.engine.tfenv import import_keras

keras = import_keras()


def _graph(model):
    if isinstance(model, keras.Sequential):
        return model._functional
    return model


def _predict(graph, outputs, inputs):
    direct = {id(x): v for x, v in zip(graph.inputs, inputs)}
    if all(id(o) in direct for o in outputs):
        return [np.asarray(direct[id(o)]) for o in outputs]
    sub = keras.Model(graph.inputs, list(outputs))
    res = sub.predict(list(inputs) if len(inputs) > 1 else inputs[0], verbose=0)
    return [np.asarray(r) for r in (res if isinstance(res, list) else [res])]


def reference_calls(model, inputs, prefix=""):
    """``{path: [arrays]}`` for every call of every operation, nested models included."""
    graph = _graph(model)
    nodes = [n for ns in graph._nodes_by_depth.values() for n in ns
             if n.operation is not None and not n.is_input]
    in_graph = set(id(n) for n in nodes)
    out = {}
    for node in nodes:
        op = node.operation
        calls = [n for n in op._inbound_nodes if id(n) in in_graph]
        k = calls.index(node)
        path = prefix + op.name + (f"@{k}" if k else "")
        out[path] = _predict(graph, node.outputs, inputs)
        if isinstance(op, keras.Model) and _graph(op) is not None:
            inner_inputs = _predict(graph, node.input_tensors, inputs)
            out.update(reference_calls(op, inner_inputs, prefix=path + "/"))
    return out

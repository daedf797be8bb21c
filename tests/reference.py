"""An independent reference for every layer call: plain Keras sub-models.

For each node of a functional graph, ``keras.Model(graph.inputs, node.outputs)``
computes exactly that call's outputs with Keras's own graph execution and
``predict``; nested models are entered by computing their inputs the same way.
Slow (one model per node) but obviously right, and it shares no code with
``kerinspect.engine.trace``: only the Keras internals it reads (a graph's nodes,
an operation's calls) come through ``kerinspect.engine.keras_adapter``.
"""

from __future__ import annotations

import numpy as np

from kerinspect.engine import keras_adapter as ka
from kerinspect.engine.tfenv import import_keras

keras = import_keras()


def _graph(model):
    return ka.graph_of(model) if isinstance(model, keras.Sequential) else model


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
    nodes = [n for _, n in ka.graph_nodes(graph)
             if ka.node_operation(n) is not None and not ka.is_input_node(n)]
    in_graph = set(id(n) for n in nodes)
    out = {}
    for node in nodes:
        op = ka.node_operation(node)
        calls = [n for n in ka.operation_nodes(op) if id(n) in in_graph]
        k = calls.index(node)
        path = prefix + op.name + (f"@{k}" if k else "")
        out[path] = _predict(graph, ka.node_outputs(node), inputs)
        if isinstance(op, keras.Model) and _graph(op) is not None:
            inner_inputs = _predict(graph, ka.node_input_tensors(node), inputs)
            out.update(reference_calls(op, inner_inputs, prefix=path + "/"))
    return out

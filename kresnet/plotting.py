"""Readable pictures of whole models, for every depth up to ResNet-152.

``keras.utils.plot_model`` draws one tall table per layer; at ResNet-152 that is a strip
of about 850 inches that Graphviz' cairo renderer scales down past 32767 pixels until no
name can be read. :func:`plot_model` draws one line per layer (name, class, output shape),
coloured by kind, which keeps ResNet-152 within the PNG limit at screen resolution.
"""

import os
import shutil

import pydot

from kresnet.validation import shape_text

#: Graphviz' cairo renderer refuses larger bitmaps and scales the drawing down.
MAX_PIXELS = 32767
FORMATS = ("png", "svg", "pdf", "dot")
RANKDIRS = ("TB", "LR", "BT", "RL")

_COLOURS = {
    "Conv2D": "#cfe2f3",
    "BatchNormalization": "#fff2cc",
    "Activation": "#d9ead3",
    "ReLU": "#d9ead3",
    "Add": "#f4cccc",
    "MaxPooling2D": "#d9d2e9",
    "AveragePooling2D": "#d9d2e9",
    "GlobalAveragePooling2D": "#d9d2e9",
    "GlobalMaxPooling2D": "#d9d2e9",
    "Dense": "#fce5cd",
    "InputLayer": "#eeeeee",
}


def _output_text(layer):
    shape = getattr(getattr(layer, "output", None), "shape", None)
    return "" if shape is None else shape_text(shape[1:])


def graph_edges(model):
    """Pairs ``(source_layer, destination_layer)`` of the model's own graph.

    Walks back from the outputs, so layers shared with other graphs add no stray edges.
    """
    edges, seen = [], set()
    stack = [t._keras_history for t in model.outputs]
    while stack:
        history = stack.pop()
        key = (id(history.operation), history.node_index)
        if key in seen:
            continue
        seen.add(key)
        node = history.operation._inbound_nodes[history.node_index]
        for tensor in node.input_tensors:
            edges.append((tensor._keras_history.operation, history.operation))
            stack.append(tensor._keras_history)
    return edges[::-1]


def model_to_dot(model, show_shapes=True, show_layer_names=True, rankdir="TB", dpi=96):
    """A ``pydot.Dot`` with one compact node per layer and the model's edges.

    >>> import kresnet
    >>> dot = model_to_dot(kresnet.create_resnet((64, 64, 3), 10, depth=18))
    >>> dot.get_node("res2a_branch2a")[0].get("label")
    'res2a_branch2a  Conv2D  16x16x64'
    """
    dot = pydot.Dot(graph_type="digraph", rankdir=rankdir, dpi=str(dpi), ranksep="0.18",
                    nodesep="0.3", label=model.name, labelloc="t", fontname="Helvetica",
                    size=f"{MAX_PIXELS / dpi:.2f},{MAX_PIXELS / dpi:.2f}")
    dot.set_node_defaults(shape="box", style="rounded,filled", fontname="Helvetica",
                          fontsize="10", height="0.25", margin="0.08,0.02")
    dot.set_edge_defaults(arrowsize="0.5")
    for layer in model.layers:
        kind = type(layer).__name__
        parts = [layer.name] if show_layer_names else []
        parts.append(kind)
        if show_shapes:
            parts.append(_output_text(layer))
        dot.add_node(pydot.Node(layer.name, label="  ".join(p for p in parts if p),
                                fillcolor=_COLOURS.get(kind, "#ffffff")))
    for source, destination in graph_edges(model):
        dot.add_edge(pydot.Edge(source.name, destination.name))
    return dot


def blocks_to_dot(model, rankdir="TB", dpi=96):
    """A ``pydot.Dot`` with one node per block (name, kind, output shape, parameters), the
    stem and the head; each block gets a solid edge (its residual branch) and a dashed edge
    labelled with its shortcut from the node before it. Built from the model's layers.

    >>> import kresnet
    >>> dot = blocks_to_dot(kresnet.create_resnet((64, 64, 3), 10, 18))
    >>> len(dot.get_nodes()) - 2  # the default node and edge styles count as nodes
    10
    """
    from kresnet.analysis import blocks, describe  # noqa: PLC0415 (analysis imports keras)

    dot = pydot.Dot(graph_type="digraph", rankdir=rankdir, dpi=str(dpi), ranksep="0.25",
                    nodesep="0.4", label=model.name, labelloc="t", fontname="Helvetica",
                    size=f"{MAX_PIXELS / dpi:.2f},{MAX_PIXELS / dpi:.2f}")
    dot.set_node_defaults(shape="box", style="rounded,filled", fontname="Helvetica",
                          fontsize="10", margin="0.1,0.04")
    dot.set_edge_defaults(arrowsize="0.5", fontname="Helvetica", fontsize="8")
    rows = {row["stage"]: row for row in describe(model)}
    previous = None
    for group in ("stem",):
        if group in rows:
            row = rows[group]
            dot.add_node(pydot.Node("stem", fillcolor="#eeeeee", label=(
                f"stem  ({row['first']} .. {row['last']})\n{shape_text(row['output'])}  "
                f"{row['params']:,} params")))
            previous = "stem"
    for block in blocks(model):
        dot.add_node(pydot.Node(block["name"], fillcolor="#cfe2f3", label=(
            f"{block['name']}  {block['kind']}\n{shape_text(block['output'])}  "
            f"{block['params']:,} params")))
        if previous is not None:
            dot.add_edge(pydot.Edge(previous, block["name"]))
            dot.add_edge(pydot.Edge(previous, block["name"], style="dashed", color="#888888",
                                    label=block["shortcut"], tailport="e", headport="e"))
        previous = block["name"]
    for group in ("post", "head"):
        if group in rows:
            row = rows[group]
            dot.add_node(pydot.Node(group, fillcolor="#fce5cd", label=(
                f"{group}  ({row['first']} .. {row['last']})\n{shape_text(row['output'])}  "
                f"{row['params']:,} params")))
            if previous is not None:
                dot.add_edge(pydot.Edge(previous, group))
            previous = group
    return dot


def _write(dot, path):
    """Write ``dot`` to ``path`` in the format of its extension, atomically."""
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in FORMATS:
        raise ValueError(f"`path` must end in one of {', '.join('.' + f for f in FORMATS)}. "
                         f"Received: path={path!r}")
    if extension != "dot" and shutil.which("dot") is None:
        raise RuntimeError("Drawing needs Graphviz' `dot` program: install Graphviz "
                           "(for example `apt-get install graphviz`).")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{os.path.basename(path)}.part")
    try:
        dot.write(temporary, format="raw" if extension == "dot" else extension)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _check_rankdir(rankdir):
    if rankdir not in RANKDIRS:
        raise ValueError(f"`rankdir` must be one of {', '.join(RANKDIRS)}. "
                         f"Received: rankdir={rankdir!r}")


def plot_blocks(model, path, rankdir="TB", dpi=96):
    """Draw the compact block diagram of :func:`blocks_to_dot` to ``path`` (png, svg, pdf or
    dot); readable at ResNet-152, where the full graph is not.

    >>> import os, tempfile, kresnet
    >>> path = os.path.join(tempfile.mkdtemp(), "blocks.svg")
    >>> plot_blocks(kresnet.create_resnet((64, 64, 3), 10, 18), path) == path
    True
    """
    _check_rankdir(rankdir)
    return _write(blocks_to_dot(model, rankdir, dpi), path)


def plot_model(model, path, show_shapes=True, show_layer_names=True, rankdir="TB", dpi=96):
    """Draw ``model`` to ``path``; the format follows the extension (png, svg, pdf, dot).

    Names and output shapes are shown by default. PNGs stay within Graphviz' 32767-pixel
    limit (larger drawings are scaled to fit rather than cut). Needs Graphviz' ``dot``.

    >>> import os, tempfile, kresnet
    >>> model = kresnet.create_resnet((64, 64, 3), 10, depth=18)
    >>> path = os.path.join(tempfile.mkdtemp(), "resnet18.svg")
    >>> plot_model(model, path) == path
    True
    """
    _check_rankdir(rankdir)
    return _write(model_to_dot(model, show_shapes, show_layer_names, rankdir, dpi), path)

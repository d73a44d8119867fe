"""Readable pictures of whole models, for every depth up to ResNet-152.

``keras.utils.plot_model`` draws one tall table per layer; at ResNet-152 that is a strip
of about 850 inches that Graphviz' cairo renderer scales down past 32767 pixels until no
name can be read. :func:`plot_model` draws one line per layer (name, class, output shape),
coloured by kind, which keeps ResNet-152 within the PNG limit at screen resolution.

SVGs are drawn at Graphviz' native 72 dpi and given the size ``dpi`` asks for through their
``width`` and ``height``: Graphviz 2.43 scales an SVG drawn at another dpi but leaves its
``viewBox`` at the unscaled size, so every viewer shows a cropped drawing.
"""

import os
import re
import shutil

import keras
import pydot

from kresnet import validation
from kresnet.files import _replace
from kresnet.validation import shape_text

#: Graphviz' cairo renderer refuses larger bitmaps and scales the drawing down.
MAX_PIXELS = 32767
FORMATS = ("png", "svg", "pdf", "dot")
RANKDIRS = ("TB", "LR", "BT", "RL")
#: Graphviz' own resolution: points per inch of its layout, the only dpi whose SVG is whole.
NATIVE_DPI = 72
#: Viewers show an SVG at 96 CSS pixels per inch: an SVG for ``dpi`` is sized so that it
#: shows as many pixels as the PNG drawn at ``dpi``.
CSS_DPI = 96

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
_SVG_SIZE = re.compile(r'<svg width="[^"]*" height="[^"]*"\s+viewBox="([^"]*)"')


def _output_text(layer):
    shape = getattr(getattr(layer, "output", None), "shape", None)
    return "" if shape is None else shape_text(shape[1:])


def _activation_text(layer):
    function = getattr(layer, "activation", None)
    if function is None:
        return ""
    return getattr(function, "__name__", None) or type(function).__name__


def _dtype_text(layer):
    policy = getattr(layer, "dtype_policy", None)
    return getattr(policy, "name", None) or str(getattr(layer, "dtype", "") or "")


def _connections(model):
    """``(source, output_index, destination, input_position)`` for every tensor of the
    model's own graph, walking back from its outputs."""
    found, seen = [], set()
    stack = [t._keras_history for t in model.outputs]
    while stack:
        history = stack.pop()
        key = (id(history.operation), history.node_index)
        if key in seen:
            continue
        seen.add(key)
        node = history.operation._inbound_nodes[history.node_index]
        for position, tensor in enumerate(node.input_tensors):
            source = tensor._keras_history
            found.append((source.operation, source.tensor_index, history.operation, position))
            stack.append(source)
    return found[::-1]


def graph_edges(model):
    """Pairs ``(source_layer, destination_layer)`` of the model's own graph.

    Walks back from the outputs, so layers shared with other graphs add no stray edges.

    >>> import kresnet
    >>> edges = graph_edges(kresnet.create_resnet((32, 32, 3), 2, blocks=(1,)))
    >>> len(edges), ("input", "conv1_pad") in [(a.name, b.name) for a, b in edges]
    (24, True)
    """
    return [(source, destination) for source, _, destination, _ in _connections(model)]


def _expands(layer, expand_nested):
    return expand_nested and isinstance(layer, keras.Model) and bool(layer.outputs)


def _inlet(layer, position, prefix, expand_nested):
    """The node id that input ``position`` of ``layer`` arrives at (inside a nested model
    that is drawn expanded, its input layer)."""
    if _expands(layer, expand_nested):
        inner = layer.inputs[position]._keras_history.operation
        return _inlet(inner, 0, f"{prefix}{layer.name}/", expand_nested)
    return prefix + layer.name


def _outlet(layer, index, prefix, expand_nested):
    """The node id that output ``index`` of ``layer`` leaves from."""
    if _expands(layer, expand_nested):
        history = layer.outputs[index]._keras_history
        return _outlet(history.operation, history.tensor_index, f"{prefix}{layer.name}/",
                       expand_nested)
    return prefix + layer.name


def _add_model(graph, model, prefix, labels):
    """Add the layers of ``model`` to ``graph`` (nested models as clusters of their own
    layers when ``labels['expand_nested']``), then its edges."""
    connections = _connections(model)
    layers = list(model.layers)
    for source, _, destination, _ in connections:  # a Sequential's input layer, say
        for layer in (source, destination):
            if all(layer is not known for known in layers):
                layers.insert(0 if source is layer else len(layers), layer)
    expand = labels["expand_nested"]
    for layer in layers:
        if _expands(layer, expand):
            cluster = pydot.Cluster(f"{prefix}{layer.name}".replace("/", "__"),
                                    label=layer.name, style="rounded,dashed", color="#888888",
                                    fontname="Helvetica", fontsize="10")
            _add_model(cluster, layer, f"{prefix}{layer.name}/", labels)
            graph.add_subgraph(cluster)
            continue
        kind = type(layer).__name__
        parts = [layer.name] if labels["show_layer_names"] else []
        parts.append(kind)
        if labels["show_shapes"]:
            parts.append(_output_text(layer))
        if labels["show_layer_activations"]:
            parts.append(_activation_text(layer))
        if labels["show_dtype"]:
            parts.append(_dtype_text(layer))
        style = "rounded,filled"
        if labels["show_trainable"]:
            parts.append("trainable" if layer.trainable else "frozen")
            style += "" if layer.trainable else ",dashed"
        graph.add_node(pydot.Node(prefix + layer.name, label="  ".join(p for p in parts if p),
                                  fillcolor=_COLOURS.get(kind, "#ffffff"), style=style))
    for source, index, destination, position in connections:
        graph.add_edge(pydot.Edge(_outlet(source, index, prefix, expand),
                                  _inlet(destination, position, prefix, expand)))


def _graph(model, rankdir, dpi, ranksep, nodesep):
    return pydot.Dot(graph_type="digraph", rankdir=rankdir, dpi=f"{dpi:g}", ranksep=ranksep,
                     nodesep=nodesep, label=model.name, labelloc="t", fontname="Helvetica",
                     size=f"{MAX_PIXELS / dpi:.2f},{MAX_PIXELS / dpi:.2f}")


def _check_drawing(model, rankdir, dpi, **flags):
    """The checks every drawing function runs before it draws anything."""
    validation.keras_model(model)
    for name, value in flags.items():
        validation.boolean(name, value)
    if not isinstance(rankdir, str) or rankdir not in RANKDIRS:
        raise ValueError(f"`rankdir` must be one of {', '.join(RANKDIRS)}. "
                         f"Received: rankdir={rankdir!r}")
    validation.number("dpi", dpi, 0, float("inf"), low_open=True, high_open=True)


def model_to_dot(model, *, show_shapes: bool = True, show_layer_names: bool = True,
                 rankdir: str = "TB", dpi: float = 96, expand_nested: bool = False,
                 show_layer_activations: bool = False, show_dtype: bool = False,
                 show_trainable: bool = False):
    """A ``pydot.Dot`` with one compact node per layer and the model's edges; arguments as
    in :func:`plot_model`.

    >>> import kresnet
    >>> dot = model_to_dot(kresnet.create_resnet((64, 64, 3), 10, depth=18))
    >>> dot.get_node("res2a_branch2a")[0].get("label")
    'res2a_branch2a  Conv2D  16x16x64'
    """
    labels = dict(show_shapes=show_shapes, show_layer_names=show_layer_names,
                  expand_nested=expand_nested, show_layer_activations=show_layer_activations,
                  show_dtype=show_dtype, show_trainable=show_trainable)
    _check_drawing(model, rankdir, dpi, **labels)
    dot = _graph(model, rankdir, dpi, ranksep="0.18", nodesep="0.3")
    dot.set_node_defaults(shape="box", style="rounded,filled", fontname="Helvetica",
                          fontsize="10", height="0.25", margin="0.08,0.02")
    dot.set_edge_defaults(arrowsize="0.5")
    _add_model(dot, model, "", labels)
    return dot


def blocks_to_dot(model, *, rankdir: str = "TB", dpi: float = 96):
    """A ``pydot.Dot`` with one node per block (name, kind, output shape, parameters), the
    stem and the head; each block gets a solid edge (its residual branch) and a dashed edge
    labelled with its shortcut from the node before it. Built from the model's layers.

    >>> import kresnet
    >>> dot = blocks_to_dot(kresnet.create_resnet((64, 64, 3), 10, 18))
    >>> len(dot.get_nodes()) - 2  # the default node and edge styles count as nodes
    10
    """
    from kresnet.analysis import blocks, describe  # noqa: PLC0415 (analysis imports keras)

    _check_drawing(model, rankdir, dpi)
    dot = _graph(model, rankdir, dpi, ranksep="0.25", nodesep="0.4")
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


def _target(path):
    """``(path, format)`` for a picture path; refuses unknown extensions, and formats that
    need Graphviz when it is missing, before anything is drawn."""
    path = validation.path(path)
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in FORMATS:
        raise ValueError(f"`path` must end in one of {', '.join('.' + f for f in FORMATS)}. "
                         f"Received: path={path!r}")
    if extension != "dot" and shutil.which("dot") is None:
        raise RuntimeError("Drawing needs Graphviz' `dot` program: install Graphviz "
                           "(for example `apt-get install graphviz`).")
    return path, extension


def _svg(dot, dpi):
    """The SVG of ``dot`` drawn whole at ``dpi``, as bytes.

    Graphviz lays the drawing out at its native 72 dpi, without the PNG size limit (an SVG
    is not a bitmap), so its ``viewBox`` holds the whole drawing; ``width`` and ``height``
    then give it the size of the PNG at ``dpi`` (as many CSS pixels, at 96 to the inch).

    >>> import pydot
    >>> text = _svg(pydot.graph_from_dot_data("digraph G { a -> b; a -> c; }")[0], 96)
    >>> text.split(b"<svg ")[1].split(b" xmlns")[0].split()[:3]
    [b'width="134.00pt"', b'height="116.00pt"', b'viewBox="0.00']
    """
    attributes = dot.obj_dict["attributes"]
    saved = {key: attributes.get(key) for key in ("dpi", "size")}
    attributes["dpi"] = str(NATIVE_DPI)
    attributes.pop("size", None)
    try:
        data = dot.create(format="svg").decode("utf-8")
    finally:
        for key, value in saved.items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
    match = _SVG_SIZE.search(data)
    if match is None:
        raise RuntimeError("Graphviz wrote an SVG without width, height and viewBox.")
    _, _, width, height = (float(v) for v in match.group(1).split())
    scale = dpi / CSS_DPI  # in pt, as Graphviz writes them
    sized = (f'<svg width="{width * scale:.2f}pt" height="{height * scale:.2f}pt"\n'
             f' viewBox="{match.group(1)}"')
    return (data[:match.start()] + sized + data[match.end():]).encode("utf-8")


def _write(dot, path, extension, dpi):
    """Write ``dot`` to ``path`` in ``extension``'s format, never half-written."""
    if extension == "dot":
        data = dot.to_string().encode("utf-8")
    elif extension == "svg":
        data = _svg(dot, dpi)
    else:
        data = dot.create(format=extension)

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(data)

    _replace(path, write, suffix="")
    return path


def plot_blocks(model, path, *, rankdir: str = "TB", dpi: float = 96):
    """Draw the compact block diagram of :func:`blocks_to_dot` to ``path`` (png, svg, pdf or
    dot); readable at ResNet-152, where the full graph is not.

    >>> import os, tempfile, kresnet
    >>> path = os.path.join(tempfile.mkdtemp(), "blocks.svg")
    >>> plot_blocks(kresnet.create_resnet((64, 64, 3), 10, 18), path) == path
    True
    """
    _check_drawing(model, rankdir, dpi)
    path, extension = _target(path)
    return _write(blocks_to_dot(model, rankdir=rankdir, dpi=dpi), path, extension, dpi)


def plot_model(model, path, *, show_shapes: bool = True, show_layer_names: bool = True,
               rankdir: str = "TB", dpi: float = 96, expand_nested: bool = False,
               show_layer_activations: bool = False, show_dtype: bool = False,
               show_trainable: bool = False):
    """Draw ``model`` to ``path``; the format follows the extension (png, svg, pdf, dot).

    Takes ``keras.utils.plot_model``'s common arguments (keyword-only), with names and
    output shapes shown by default. SVGs show the whole drawing in every viewer; PNGs stay
    within Graphviz' 32767-pixel limit (larger drawings are scaled to fit rather than cut).
    Needs Graphviz' ``dot``, except for ``.dot`` files.

    >>> import os, tempfile, kresnet
    >>> model = kresnet.create_resnet((64, 64, 3), 10, depth=18)
    >>> path = os.path.join(tempfile.mkdtemp(), "resnet18.svg")
    >>> plot_model(model, path, show_trainable=True) == path
    True
    """
    flags = dict(show_shapes=show_shapes, show_layer_names=show_layer_names,
                 expand_nested=expand_nested, show_layer_activations=show_layer_activations,
                 show_dtype=show_dtype, show_trainable=show_trainable)
    _check_drawing(model, rankdir, dpi, **flags)
    path, extension = _target(path)
    return _write(model_to_dot(model, rankdir=rankdir, dpi=dpi, **flags), path, extension, dpi)

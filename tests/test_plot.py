"""Pictures: keras.utils.plot_model and kresnet.plot_model draw every depth, and every SVG
kresnet writes shows its whole drawing when a real SVG renderer draws it."""

import os
import re
import shutil
import subprocess
from xml.etree import ElementTree

import keras
import numpy as np
import pytest

import kresnet

# One pytest-xdist worker runs this file: its module fixtures are made once.
pytestmark = [pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is missing"),
              pytest.mark.xdist_group("test_plot")]

PNG_LIMIT = 32767


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# --- A picture as a reader sees it ---------------------------------------------------------
# Graphviz 2.43 writes SVGs whose viewBox ignores `dpi`, so viewers show a cropped drawing
# (issue 19). These helpers check the file itself: the drawing's extent against the viewBox,
# and a render with a real SVG renderer (librsvg's rsvg-convert) in which every sink node of
# the graph (the head, the final ReLU) is drawn where it belongs, inside the image.

SVG_NS = "{http://www.w3.org/2000/svg}"
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_WHITE = 245  # a pixel with every channel at or above this is background


def rsvg_convert():
    """The path of ``rsvg-convert``; skip without it (fail when KRESNET_REQUIRE_EXTRAS=1,
    as in CI, where scripts/setup-env.sh installs it)."""
    program = shutil.which("rsvg-convert")
    if program is None:
        message = ("rsvg-convert is missing: `apt-get install librsvg2-bin` "
                   "(scripts/setup-env.sh does, as root) to render the SVGs")
        if os.environ.get("KRESNET_REQUIRE_EXTRAS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return program


def _numbers(text):
    return [float(v) for v in _NUMBER.findall(text or "")]


def _transform(text, outer):
    """Compose the SVG transform list ``text`` (scale, translate, rotate(0)) inside
    ``outer``: a function of a point, as the viewer maps it to the viewBox."""
    steps = re.findall(r"(\w+)\s*\(([^)]*)\)", text or "")

    def apply(x, y):
        for name, arguments in reversed(steps):
            values = _numbers(arguments)
            if name == "scale":
                x, y = x * values[0], y * (values[1] if len(values) > 1 else values[0])
            elif name == "translate":
                x, y = x + values[0], y + (values[1] if len(values) > 1 else 0.0)
            elif name == "rotate":
                assert values[0] == 0, f"unexpected transform {text!r}"
            else:
                raise AssertionError(f"unexpected transform {text!r}")
        return outer(x, y)

    return apply


def _points(element):
    """The points that bound a Graphviz shape, in its own coordinates."""
    tag = element.tag.replace(SVG_NS, "")
    if tag in ("polygon", "polyline"):
        values = _numbers(element.get("points"))
    elif tag == "path":
        values = _numbers(element.get("d"))  # Graphviz writes absolute M/C/L commands
    elif tag == "ellipse":
        cx, cy, rx, ry = (float(element.get(k)) for k in ("cx", "cy", "rx", "ry"))
        values = [cx - rx, cy - ry, cx + rx, cy + ry]
    elif tag == "rect":
        x, y = float(element.get("x", 0)), float(element.get("y", 0))
        values = [x, y, x + float(element.get("width")), y + float(element.get("height"))]
    elif tag == "text":
        values = [float(element.get("x")), float(element.get("y"))]
    else:
        return []
    return list(zip(values[0::2], values[1::2]))


def _walk(element, transform):
    """``(element, point)`` for every shape point below ``element``, in viewBox units."""
    transform = _transform(element.get("transform"), transform)
    for point in _points(element):
        yield element, transform(*point)
    for child in element:
        yield from _walk(child, transform)


def svg_geometry(path):
    """``(viewBox, (width, height) in pt, extent, {node: box}, sinks)`` of a Graphviz SVG.
    ``extent`` and each node's box are ``(x0, y0, x1, y1)`` in viewBox units after every
    transform; ``sinks`` are the nodes no edge leaves (the model's output, the final ReLU)."""
    root = ElementTree.parse(path).getroot()
    view = tuple(_numbers(root.get("viewBox")))
    assert len(view) == 4, f"{path}: no viewBox"
    size = tuple(_numbers(root.get(k))[0] for k in ("width", "height"))
    points = [p for _, p in _walk(root, lambda x, y: (x, y))]
    extent = (min(x for x, _ in points), min(y for _, y in points),
              max(x for x, _ in points), max(y for _, y in points))
    boxes, tails = {}, set()
    graph = root.find(f"{SVG_NS}g")
    outer = _transform(graph.get("transform"), lambda x, y: (x, y))
    for group in graph.iter(f"{SVG_NS}g"):
        title = group.findtext(f"{SVG_NS}title")
        if group.get("class") == "node":
            shape = [p for e, p in _walk(group, outer) if e.tag != f"{SVG_NS}text"]
            boxes[title] = (min(x for x, _ in shape), min(y for _, y in shape),
                            max(x for x, _ in shape), max(y for _, y in shape))
        elif group.get("class") == "edge":
            tails.add(title.split("->")[0].split(":")[0])
    return view, size, extent, boxes, sorted(set(boxes) - tails)


def check_svg_is_whole(path, sinks=None, bottom=True, tmp_folder=None):
    """Assert that the SVG at ``path`` shows its whole drawing: the drawing's extent lies in
    the viewBox, and rendered by rsvg-convert every sink node (or each of ``sinks``) is drawn
    inside the image; with ``bottom`` (a top-to-bottom graph) they are in its bottom tenth.
    Returns the rendered PNG's path."""
    from PIL import Image

    view, size, extent, boxes, found = svg_geometry(path)
    vx, vy, vw, vh = view
    x0, y0, x1, y1 = extent
    tolerance = 0.5  # Graphviz rounds the viewBox to 1/100 unit
    assert vx - tolerance <= x0 and x1 <= vx + vw + tolerance and \
        vy - tolerance <= y0 and y1 <= vy + vh + tolerance, \
        f"{path}: the drawing spans {extent}, beyond its viewBox {view}"
    assert abs(size[0] / size[1] - vw / vh) < 0.01 * vw / vh, \
        f"{path}: width/height {size} do not have the viewBox's proportions {view}"
    sinks = found if sinks is None else sinks
    assert sinks and set(sinks) <= set(boxes), (path, sinks, sorted(boxes)[:5])

    png = os.path.join(tmp_folder or os.path.dirname(path),
                       os.path.basename(path) + ".rendered.png")
    subprocess.run([rsvg_convert(), "--background-color", "white", "-o", png, path],
                   check=True, capture_output=True, timeout=300)
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    height, width = pixels.shape[:2]
    ink = (pixels < _WHITE).any(axis=2)
    # Nothing runs into the image's edges: Graphviz leaves a margin around the drawing.
    assert not (ink[:2].any() or ink[-2:].any() or ink[:, :2].any() or ink[:, -2:].any()), \
        f"{png}: the drawing touches the edge of the rendered image (cut off)"
    for name in sinks:
        bx0, by0, bx1, by1 = boxes[name]
        left, right = (bx0 - vx) / vw * width, (bx1 - vx) / vw * width
        top, low = (by0 - vy) / vh * height, (by1 - vy) / vh * height
        assert 0 <= left and right <= width and 0 <= top and low <= height, \
            f"{png}: node {name!r} lies at {(left, top, right, low)}, outside {width}x{height}"
        columns = slice(int(left), int(right) + 1)
        outline = [ink[max(int(row) - 2, 0):int(row) + 3, columns].any(axis=0).mean()
                   for row in (top, low)]  # the box's top and bottom sides
        label = ink[int(top) + 3:int(low) - 2, int(left) + 3:int(right) - 2]
        assert min(outline) > 0.5 and label.any(), f"{png}: node {name!r} is not drawn"
        if bottom:
            tenth = ink[int(height * 0.9):, int(left):int(right) + 1]
            assert tenth.any() and low > height * 0.9, \
                f"{png}: node {name!r} is not drawn in the bottom tenth"
    return png


@pytest.fixture(scope="module", params=[18, 34, 50, 101, 152])
def model(request):
    return kresnet.create_resnet((224, 224, 3), 1000, request.param, head="fc")


@pytest.mark.slow
def test_keras_plot_model_draws_every_depth(model, tmp_path):
    for extension in ("png", "svg"):
        path = tmp_path / f"{model.name}.{extension}"
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True,
                               show_layer_names=True)
        assert path.stat().st_size > 10_000
    assert b"res5b_relu" in (tmp_path / f"{model.name}.svg").read_bytes()


@pytest.mark.slow
def test_kresnet_plot_model_is_readable_at_every_depth(model, tmp_path):
    png = kresnet.plot_model(model, tmp_path / f"{model.name}.png")
    svg = kresnet.plot_model(model, tmp_path / f"{model.name}.svg")
    width, height = png_size(png)
    assert max(width, height) < PNG_LIMIT
    # Not scaled down: 96 dpi keeps ~0.45 inch per layer, i.e. > 35 px per layer in the chain.
    assert height > 35 * len(model.layers) // 2
    text = open(svg, encoding="utf-8").read()
    assert "res2a_branch2a" in text and "bn_conv1" in text and "7x7x" in text
    check_svg_is_whole(svg, sinks=["fc1000"])
    edges = kresnet.plotting.graph_edges(model)
    assert len(edges) == sum(len(layer._inbound_nodes[0].input_tensors)
                             for layer in model.layers[1:])


def test_plot_model_refuses_unknown_formats(tmp_path):
    model = kresnet.create_resnet((32, 32, 3), 2, blocks=(1,))
    with pytest.raises(ValueError, match="`path` must end in one of"):
        kresnet.plot_model(model, tmp_path / "model.bmp")
    assert kresnet.plot_model(model, tmp_path / "model.dot").endswith("model.dot")


@pytest.fixture(scope="module")
def small():
    return kresnet.create_resnet((64, 64, 3), 10, depth=18)


@pytest.mark.parametrize("options", [{}, {"dpi": 72}, {"dpi": 200}, {"dpi": 150.5},
                                     {"rankdir": "LR"}, {"show_shapes": False}],
                         ids=["default", "dpi72", "dpi200", "dpi150.5", "LR", "noshapes"])
def test_plot_model_writes_whole_svgs(small, tmp_path, options):
    path = kresnet.plot_model(small, tmp_path / "resnet18.svg", **options)
    check_svg_is_whole(path, sinks=["fc_final"], bottom=options.get("rankdir", "TB") == "TB")
    assert os.listdir(tmp_path) == ["resnet18.svg", "resnet18.svg.rendered.png"]


@pytest.mark.parametrize("dpi", [96, 200])
def test_plot_blocks_writes_whole_svgs(small, tmp_path, dpi):
    path = kresnet.plot_blocks(small, tmp_path / "blocks.svg", dpi=dpi)
    check_svg_is_whole(path, sinks=["head"])


def test_svg_size_follows_dpi_like_the_png(small, tmp_path):
    """An SVG at ``dpi`` is as large (in CSS pixels at 96 per inch) as the PNG at ``dpi``."""
    for dpi in (96, 200):
        png = kresnet.plot_model(small, tmp_path / f"r{dpi}.png", dpi=dpi)
        svg = kresnet.plot_model(small, tmp_path / f"r{dpi}.svg", dpi=dpi)
        _, (width, height), _, _, _ = svg_geometry(svg)
        # pt -> px at 96 per inch; the PNG is within a pixel or two of it.
        assert np.allclose(np.array(png_size(png)), np.array([width, height]) * 96 / 72,
                           atol=3), dpi


@pytest.mark.parametrize("compact", [False, True], ids=["full", "compact"])
def test_cli_plot_writes_a_whole_svg(tmp_path, compact):
    from kresnet import cli

    path = tmp_path / "resnet18.svg"
    assert cli.main(["plot", "resnet18", "-o", str(path), *(["--compact"] if compact else [])]) \
        == 0
    check_svg_is_whole(str(path), sinks=["head" if compact else "fc1000"])


def test_the_check_sees_what_graphviz_crops(tmp_path):
    """The test of the picture fails on Graphviz 2.43's own SVG at 96 dpi (issue 19)."""
    path = tmp_path / "crop.svg"
    path.write_bytes(subprocess.run(["dot", "-Tsvg"], input=b"digraph G { dpi=96; a -> b; "
                                    b"a -> c; }", capture_output=True, check=True).stdout)
    view, _, extent, _, _ = svg_geometry(path)
    if extent[2] <= view[0] + view[2] + 0.5:
        pytest.skip("this Graphviz writes a viewBox that holds the scaled drawing")
    with pytest.raises(AssertionError, match="beyond its viewBox"):
        check_svg_is_whole(str(path))


def test_keras_plot_model_crops_svgs_as_the_docs_say(tmp_path):
    """docs/getting-started.md tells readers not to draw SVGs with keras.utils.plot_model
    on this Graphviz: its SVG at Keras' default dpi is cropped."""
    x = keras.Input((4,), name="x")
    tiny = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.Dense(3)(x)))
    path = tmp_path / "keras.svg"
    keras.utils.plot_model(tiny, to_file=str(path))
    view, _, extent, _, _ = svg_geometry(path)
    if extent[2] <= view[0] + view[2] + 0.5:
        pytest.skip("this Graphviz writes whole SVGs at any dpi; the warning is not needed")
    with pytest.raises(AssertionError, match="beyond its viewBox"):
        check_svg_is_whole(str(path))


def test_plot_model_takes_keras_arguments(small, tmp_path):
    dot = kresnet.plotting.model_to_dot(small, show_dtype=True, show_trainable=True,
                                        show_layer_activations=True)
    label = dot.get_node("fc_final")[0].get("label")
    assert label.strip('"') == "fc_final  Dense  10  softmax  float32  trainable"
    assert "relu" in dot.get_node("res2a_relu")[0].get("label")
    assert "linear" in dot.get_node("res2a_branch2a")[0].get("label")
    assert "softmax" not in kresnet.plotting.model_to_dot(small).get_node(
        "fc_final")[0].get("label")
    small.get_layer("bn_conv1").trainable = False
    try:
        frozen = kresnet.plotting.model_to_dot(small, show_trainable=True)
        assert "frozen" in frozen.get_node("bn_conv1")[0].get("label")
    finally:
        small.get_layer("bn_conv1").trainable = True
    path = kresnet.plot_model(small, tmp_path / "all.svg", show_shapes=True,
                              show_layer_names=True, rankdir="TB", dpi=200, expand_nested=True,
                              show_layer_activations=True, show_dtype=True, show_trainable=True)
    check_svg_is_whole(path, sinks=["fc_final"])
    assert kresnet.plot_model(small, str(tmp_path / "positional.dot")).endswith(".dot")


@pytest.mark.parametrize("function", ["plot_model", "plot_blocks"])
def test_plot_arguments_are_checked_before_drawing(small, tmp_path, function):
    draw = getattr(kresnet, function)
    target = tmp_path / "x.svg"
    flags = ["show_shapes", "show_layer_names", "expand_nested", "show_layer_activations",
             "show_dtype", "show_trainable"] if function == "plot_model" else []
    for flag in flags:
        with pytest.raises(TypeError, match=f"`{flag}` must be True or False"):
            draw(small, target, **{flag: 1})
    with pytest.raises(ValueError, match="`rankdir` must be one of"):
        draw(small, target, rankdir="up")
    for dpi, error in ((0, ValueError), (-5, ValueError), ("96", TypeError), (True, TypeError)):
        with pytest.raises(error, match="`dpi`"):
            draw(small, target, dpi=dpi)
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        draw("resnet18", target)
    with pytest.raises(TypeError):
        draw(small, target, "LR")  # everything after the path is keyword-only
    assert not target.exists()


def _nested():
    inner_input = keras.Input((8, 8, 16), name="inner_input")
    inner = keras.Model(inner_input, kresnet.identity_block(inner_input, 3, (4, 4, 16), 2, "a"),
                        name="inner")
    x = keras.Input((8, 8, 16), name="input")
    y = keras.layers.Conv2D(16, 1, name="before")(x)
    y = inner(y)
    y = keras.layers.GlobalAveragePooling2D(name="avg_pool")(y)
    return keras.Model(x, keras.layers.Dense(3, name="fc")(y), name="outer"), inner


def test_expand_nested_draws_the_inner_model(tmp_path):
    outer, inner = _nested()
    folded = kresnet.plotting.model_to_dot(outer)
    assert folded.get_node("inner") and not folded.get_node("inner/res2a_branch2a")
    expanded = kresnet.plotting.model_to_dot(outer, expand_nested=True)
    names = {node.get_name().strip('"') for graph in [expanded, *expanded.get_subgraphs()]
             for node in graph.get_nodes()}
    assert {f"inner/{layer.name}" for layer in inner.layers} <= names
    assert "inner" not in names
    edges = {(e.get_source().strip('"'), e.get_destination().strip('"'))
             for graph in [expanded, *expanded.get_subgraphs()] for e in graph.get_edges()}
    assert ("before", "inner/inner_input") in edges and ("inner/res2a_relu", "avg_pool") in edges
    assert ("inner/res2a_branch2a", "inner/bn2a_branch2a") in edges
    for expand in (False, True):
        path = kresnet.plot_model(outer, tmp_path / f"nested_{expand}.svg", expand_nested=expand)
        check_svg_is_whole(path, sinks=["fc"])

"""Pictures: keras.utils.plot_model and kresnet.plot_model draw every depth."""

import shutil

import keras
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


@pytest.fixture(scope="module", params=[18, 34, 50, 101, 152])
def model(request):
    return kresnet.create_resnet((224, 224, 3), 1000, request.param, head="fc")


def test_keras_plot_model_draws_every_depth(model, tmp_path):
    for extension in ("png", "svg"):
        path = tmp_path / f"{model.name}.{extension}"
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True,
                               show_layer_names=True)
        assert path.stat().st_size > 10_000
    assert b"res5b_relu" in (tmp_path / f"{model.name}.svg").read_bytes()


def test_kresnet_plot_model_is_readable_at_every_depth(model, tmp_path):
    png = kresnet.plot_model(model, tmp_path / f"{model.name}.png")
    svg = kresnet.plot_model(model, tmp_path / f"{model.name}.svg")
    width, height = png_size(png)
    assert max(width, height) < PNG_LIMIT
    # Not scaled down: 96 dpi keeps ~0.45 inch per layer, i.e. > 35 px per layer in the chain.
    assert height > 35 * len(model.layers) // 2
    text = open(svg, encoding="utf-8").read()
    assert "res2a_branch2a" in text and "bn_conv1" in text and "7x7x" in text
    edges = kresnet.plotting.graph_edges(model)
    assert len(edges) == sum(len(layer._inbound_nodes[0].input_tensors)
                             for layer in model.layers[1:])


def test_plot_model_refuses_unknown_formats(tmp_path):
    model = kresnet.create_resnet((32, 32, 3), 2, blocks=(1,))
    with pytest.raises(ValueError, match="`path` must end in one of"):
        kresnet.plot_model(model, tmp_path / "model.bmp")
    assert kresnet.plot_model(model, tmp_path / "model.dot").endswith("model.dot")

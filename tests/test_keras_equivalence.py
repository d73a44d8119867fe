"""kresnet computes the same function as keras.applications' ResNets with the same weights."""

import keras
import numpy as np
import pytest

import kresnet
from kresnet import naming
from tests.conftest import zero_initial_weights

# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = pytest.mark.slow

#: (keras.applications name, kresnet function and arguments, pre-activation). The
#: ResNet-50s are test_interop's too: built once in its xdist group (``full_size.fresh``).
SHARED = pytest.mark.xdist_group("test_interop")
PAIRS = [
    pytest.param("ResNet50", ("ResNet50",), False, marks=SHARED, id="ResNet50"),
    pytest.param("ResNet101", ("ResNet101",), False, id="ResNet101"),
    pytest.param("ResNet152", ("ResNet152",), False, id="ResNet152"),
    pytest.param("ResNet50V2", ("build", "resnet50v2"), True, marks=SHARED, id="ResNet50V2"),
    pytest.param("ResNet101V2", ("build", "resnet101v2"), True, id="ResNet101V2"),
    pytest.param("ResNet152V2", ("build", "resnet152v2"), True, id="ResNet152V2"),
]


def weighted(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


@pytest.mark.parametrize("keras_name,ours,preact", PAIRS)
def test_same_outputs_with_transferred_weights(keras_name, ours, preact, full_size):
    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    # Logits, not softmax: near-uniform probabilities would hide differences.
    reference = getattr(keras.applications, keras_name)(
        weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    arguments = {"input_shape": (64, 64, 3), "classifier_activation": None}
    if keras_name.startswith("ResNet50"):
        model = full_size.fresh(*ours, **arguments)  # every weight is set below
    else:
        with zero_initial_weights():  # every weight is set below (a layer left out: zeros)
            model = getattr(kresnet, ours[0])(*ours[1:], **arguments)
    assert model.count_params() == reference.count_params()
    labels = [[b.label for b in stage] for stage in kresnet.plan(
        int(keras_name[6:9].rstrip("V")), **({"stride_block": "last"} if preact else {})).stages]
    mapping = naming.keras_applications_names(labels)
    ours_layers, theirs_layers = weighted(model), weighted(reference)
    assert sorted(mapping[n] for n in ours_layers) == sorted(theirs_layers)  # one-to-one
    rng = np.random.default_rng(0)
    for name, layer in ours_layers.items():
        source = theirs_layers[mapping[name]]
        # Random statistics so that the BNs are not near-identities.
        values = [w + rng.normal(0, 0.1, w.shape).astype("float32") if w.ndim == 1 else w
                  for w in source.get_weights()]
        values = [np.abs(v) + 0.5 if "variance" in w.path else v
                  for v, w in zip(values, source.weights)]
        source.set_weights(values)
        layer.set_weights(values)
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32") / 127.5 - 1
    expected = np.asarray(reference(x, training=False))
    assert np.abs(expected).max() > 0.1
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected,
                               atol=1e-5 * scale, rtol=0)

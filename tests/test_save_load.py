"""Every depth saves to .keras and loads in a fresh process without kresnet, safe_mode on."""

import keras
import numpy as np
import pytest

import kresnet
from tests.conftest import load_one_in_fresh_process

# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_every_depth_round_trips_in_a_fresh_process(depth, tmp_path):
    keras.backend.clear_session()
    keras.utils.set_random_seed(depth)
    model = kresnet.create_resnet((32, 32, 3), 10, depth)
    x = np.random.default_rng(depth).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    outputs, names = load_one_in_fresh_process(model, tmp_path, x)
    assert names == [layer.name for layer in model.layers]
    np.testing.assert_array_equal(outputs, np.asarray(model(x, training=False)))


def test_headless_prefixed_model_round_trips(tmp_path):
    model = kresnet.ResNet18(include_top=False, input_shape=(None, None, 3), pooling="avg",
                             name_prefix="backbone_")
    x = np.random.default_rng(1).uniform(0, 1, (1, 40, 72, 3)).astype("float32")
    outputs, names = load_one_in_fresh_process(model, tmp_path, x)
    assert names[0] == "backbone_input" and names[-1] == "backbone_avg_pool"
    np.testing.assert_array_equal(outputs, np.asarray(model(x, training=False)))


def test_trained_weights_survive(tmp_path):
    """After a training step the moving statistics and weights differ from init; they round-trip."""
    model = kresnet.create_resnet((32, 32, 1), 3, blocks=(1, 1), block_type="basic")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.run_eagerly = True  # one step: tracing a training graph would cost more than it
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 32, 32, 1)).astype("float32")
    model.fit(x, rng.integers(0, 3, 8), epochs=1, verbose=0)
    outputs, _ = load_one_in_fresh_process(model, tmp_path, x)
    np.testing.assert_allclose(outputs, np.asarray(model(x, training=False)), atol=1e-7)

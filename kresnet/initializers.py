"""Faster draws of the default kernel initializer while a network is built.

kresnet's default, ``he_normal``, is Keras' ``HeNormal``: a normal distribution truncated at
two standard deviations, scaled so that the kernel's standard deviation is
``sqrt(2 / fan_in)``. Keras draws it on TensorFlow with ``stateless_truncated_normal``,
about three times the time of the uniform draws of keras.applications' ``glorot_uniform``;
for a ResNet-50 that is a third of building it. :class:`DrawnHeNormal` draws the same
distribution by its inverse CDF (one uniform draw and ``erfinv``, with ``keras.random`` and
``keras.ops`` only, on every back end). It only stands in while :func:`kresnet.builder.
build_model` makes the layers: :func:`restore` then gives each layer the ``HeNormal`` that
it would have had (the same object, seed included), so no configuration or saved file ever
names the stand-in.
"""

import math

import keras

#: Where Keras' truncated normal is cut, in standard deviations of the untruncated normal.
CUT = 2.0
#: The standard deviation of a standard normal cut at +-2 (Keras' VarianceScaling constant):
#: the untruncated normal is widened by 1 / this so that the drawn values have the wanted one.
TRUNCATED_STDDEV = 0.87962566103423978
# erf(CUT / sqrt(2)) = P(|z| < CUT): erfinv maps (-_EDGE, _EDGE) onto (-CUT, CUT) / sqrt(2).
_EDGE = math.erf(CUT / math.sqrt(2.0))
_FLOATS = ("float32", "float64")


def fan_in(shape):
    """The fan-in that Keras' ``VarianceScaling`` reads from a kernel shape: the input units
    of a Dense kernel, ``receptive field * input channels`` of a conv kernel (a grouped conv's
    kernel holds ``in_channels / groups`` of them), the length of a vector."""
    shape = tuple(shape)
    if not shape:
        return 1
    if len(shape) <= 2:
        return int(shape[0])
    return int(math.prod(shape[:-1]))


def stddev(shape):
    """The standard deviation of the untruncated normal that ``HeNormal`` cuts for
    ``shape``: ``sqrt(2 / fan_in) / 0.8796...``, so that the cut one has ``sqrt(2 / fan_in)``."""
    return math.sqrt(2.0 / max(1.0, fan_in(shape))) / TRUNCATED_STDDEV


class DrawnHeNormal(keras.initializers.Initializer):
    """``keras.initializers.HeNormal()`` drawn by its inverse CDF: uniform on
    ``(-erf(sqrt 2), erf(sqrt 2))``, through ``erfinv``, times ``sqrt(2) * stddev``: a normal
    truncated at two standard deviations, as Keras draws it, for about half the time.

    It makes its ``HeNormal`` (:attr:`real`) when it is made, which takes a seed from
    Python's ``random`` as Keras' own does, and draws from that seed, so that
    ``keras.utils.set_random_seed`` makes builds reproducible as before.

    >>> init = DrawnHeNormal()
    >>> type(init.real).__name__, tuple(init((3, 3, 8, 4)).shape)
    ('HeNormal', (3, 3, 8, 4))
    """

    def __init__(self):
        self.real = keras.initializers.HeNormal()

    def __call__(self, shape, dtype=None):
        dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
        # erfinv is not defined for every 16-bit float on every back end: draw in float32.
        draw = dtype if dtype in _FLOATS else "float32"
        uniform = keras.random.uniform(shape, minval=-_EDGE, maxval=_EDGE, dtype=draw,
                                       seed=self.real.seed)
        values = keras.ops.multiply(keras.ops.erfinv(uniform), math.sqrt(2.0) * stddev(shape))
        return values if draw == dtype else keras.ops.cast(values, dtype)


def restore(model):
    """Give each layer of ``model`` whose kernel initializer is a :class:`DrawnHeNormal`
    that stand-in's ``HeNormal`` back."""
    for layer in model.layers:
        initializer = getattr(layer, "kernel_initializer", None)
        if isinstance(initializer, DrawnHeNormal):
            layer.kernel_initializer = initializer.real

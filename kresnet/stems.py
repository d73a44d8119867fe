"""The stem: what turns the image into the first stage's input."""

from keras import layers

from kresnet import validation
from kresnet.naming import StemNames
from kresnet.options import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, Options

#: Downsampling of the classic stem (7x7/2 conv, then 3x3/2 max pooling).
CLASSIC_STRIDE = 4


def classic_stem(x, options, filters=64):
    """7x7/2 conv, BN, ReLU, 3x3/2 max pooling, each stride with explicit padding."""
    names = StemNames(options.name_prefix)
    x = options.conv(x, filters, 7, 2, names.conv, pad_name=names.conv_pad)
    x = options.bn(x, names.bn)
    x = options.relu(x, names.relu)
    x = layers.ZeroPadding2D(1, data_format=options.data_format, name=names.pool_pad)(x)
    return layers.MaxPooling2D(3, strides=2, data_format=options.data_format,
                               name=names.pool)(x)


def do_first_conv(input_tensor, *, filters=64, use_bias=True, bn_epsilon=BN_EPSILON,
                  bn_momentum=BN_MOMENTUM, kernel_initializer=KERNEL_INITIALIZER,
                  name_prefix=""):
    """The classic stem: pad 3, 7x7/2 conv of 64 filters, BN, ReLU, pad 1, 3x3/2 max pooling.

    Layers: ``conv1_pad``, ``conv1``, ``bn_conv1``, ``conv1_relu``, ``pool1_pad``, ``pool1``.
    The output is 4 times smaller than the input in height and width.

    >>> import keras
    >>> y = do_first_conv(keras.Input((224, 224, 3)))
    >>> tuple(y.shape)
    (None, 56, 56, 64)
    """
    filters = validation.positive_int("filters", filters)
    options = Options.checked(use_bias, bn_epsilon, bn_momentum, kernel_initializer,
                              name_prefix)
    if validation.input_tensor(input_tensor) is None:
        raise TypeError("`input_tensor` must be a Keras tensor, not None.")
    validation.unused_names(input_tensor, StemNames(options.name_prefix).all(), "The stem")
    return classic_stem(input_tensor, options, filters)

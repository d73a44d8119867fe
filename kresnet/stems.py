"""The stems: what turns the image into the first stage's input.

- ``"classic"``: 7x7/2 conv, BN, ReLU, 3x3/2 max pooling (He et al. 2015).
- ``"deep"``: three 3x3 convs, the first with stride 2, then 3x3/2 max pooling
  (ResNet-C of He et al. 2019, "Bag of Tricks"); widths 32, 32, 64 by default.
- ``"cifar"``: one 3x3/1 conv, BN, ReLU and no pooling (He et al. 2015, section 4.2).

In pre-activation networks the stem's last conv is followed by neither BN nor ReLU: the
first block's pre-activation does that. Its values may then be negative, and the padding of
the max pooling matters: zeros (``stem_pool="zeros"``, keras' ResNet50V2) or cells that
never win (``"ignore"``, timm's ResNetV2).
"""

import dataclasses

from keras import layers

from kresnet import validation
from kresnet.downsampling import anti_alias
from kresnet.config import LAYER_OPTIONS, STEM_WIDTHS, keyword_signature, part_config, \
    reject_unknown
from kresnet.naming import StemNames
from kresnet.options import Options

#: The keyword options of :func:`do_first_conv` besides ``filters``.
OPTIONS = LAYER_OPTIONS + ("stem", "stem_width")


def _pool(x, names, options, padding="zeros", aa=None):
    if padding == "conv":
        # ResNet-RS: a 3x3 conv, BN and ReLU downsample instead of a max pool; with
        # anti-aliasing the conv runs at stride 1 and the anti-aliasing strides (timm).
        channels = validation.channels_of(x, options.data_format)
        x = options.conv(x, channels, 3, 1 if aa else 2, names.pool, pad_name=names.pool_pad)
        if aa:
            x = anti_alias(x, aa, (2, 2), names.pool_aa, options.data_format)
        return options.relu(options.bn(x, names.pool_bn), names.pool_relu)
    if aa == "avg":  # timm's resnetaa: a 2x2 average pool instead of the max pool
        return anti_alias(x, aa, (2, 2), names.pool, options.data_format)
    if aa == "blur":  # timm's resnetblur: a 3x3/1 max pool, then the blur strides
        x = layers.MaxPooling2D(3, strides=1, padding="same", data_format=options.data_format,
                                name=names.pool)(x)
        return anti_alias(x, aa, (2, 2), names.pool_aa, options.data_format)
    if padding == "ignore":
        # torch's MaxPool2d(3, 2, padding=1), whose padding never wins: a 3x3/1 "same" max
        # pool pads 1 on every side and ignores the padding, then a 1x1/2 pool keeps every
        # other pixel (TensorFlow's strided "same" would pad the bottom and right only).
        x = layers.MaxPooling2D(3, strides=1, padding="same", data_format=options.data_format,
                                name=names.pool)(x)
        return layers.MaxPooling2D(1, strides=2, data_format=options.data_format,
                                   name=names.pool_stride)(x)
    x = layers.ZeroPadding2D(1, data_format=options.data_format, name=names.pool_pad)(x)
    return layers.MaxPooling2D(3, strides=2, data_format=options.data_format,
                               name=names.pool)(x)


def build_stem(x, stem, widths, options, preact=False, pool="zeros", aa=None):
    """Build a checked stem (see the module docstring) on ``x``; ``pool`` is the
    ``stem_pool`` option (the padding of the max pooling, or a conv), ``aa`` the
    ``anti_alias`` option."""
    names = StemNames(options.name_prefix)
    parts = ("a", "b", "c") if stem == "deep" else ("",)
    kernel, first_stride = (7, 2) if stem == "classic" else (3, 2 if stem == "deep" else 1)
    for i, (part, width) in enumerate(zip(parts, widths)):
        last = i == len(parts) - 1
        # A conv followed by BN needs no bias: pre-activation nets leave it off (keras' V2).
        x = options.conv(x, width, kernel, first_stride if i == 0 else 1, names.conv(part),
                         pad_name=names.conv_pad(part),
                         use_bias=options.use_bias and not (preact and not last))
        if preact and last:
            break
        x = options.relu(options.bn(x, names.bn(part)), names.relu(part))
    return x if stem == "cifar" else _pool(x, names, options, pool, aa)


def do_first_conv(input_tensor, *, filters=64, **options):
    """The classic stem: pad 3, 7x7/2 conv of 64 filters, BN, ReLU, pad 1, 3x3/2 max pooling.

    Layers: ``conv1_pad``, ``conv1``, ``bn_conv1``, ``conv1_relu``, ``pool1_pad``, ``pool1``.
    The output is 4 times smaller than the input in height and width. ``filters`` is the
    classic stem's width; ``stem="deep"`` or ``"cifar"`` builds the other stems, whose
    widths ``stem_width`` sets (it may set the classic one too, instead of ``filters``).
    The other keyword options are the layer options of :class:`kresnet.ResNetConfig`.

    >>> import keras
    >>> y = do_first_conv(keras.Input((224, 224, 3)))
    >>> tuple(y.shape)
    (None, 56, 56, 64)
    """
    filters = validation.positive_int("filters", filters)
    reject_unknown(options, OPTIONS, "do_first_conv")
    stem, stem_width = options.get("stem", "classic"), options.get("stem_width")
    if filters != STEM_WIDTHS["classic"][0] and (stem != "classic" or stem_width is not None):
        raise ValueError(f"`filters`={filters} sets the classic stem's width only; with "
                         f"`stem`={stem!r} and `stem_width`={stem_width!r} pass the width(s) "
                         "as `stem_width`.")
    if stem_width is None and stem == "classic":
        options["stem_width"] = filters
    # The config checks every option, the stem's widths against its kind among them.
    config, norm = part_config(options, "stem_width")
    if validation.input_tensor(input_tensor) is None:
        raise TypeError("`input_tensor` must be a Keras tensor, not None.")
    validation.unused_names(input_tensor, StemNames(config.name_prefix).all(), "The stem")
    return build_stem(input_tensor, config.stem, config.stem_width,
                      dataclasses.replace(Options.of(config), norm=norm), pool=config.stem_pool)


do_first_conv.__signature__ = keyword_signature(do_first_conv, OPTIONS)

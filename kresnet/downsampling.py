"""Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant
Again"), as timm's ``resnetaa`` and ``resnetblur`` do it: the strided conv runs at stride 1
and one of these downsamples its activation instead.

- ``"avg"``: a 2x2 average pool with stride 2.
- ``"blur"``: timm's ``BlurPool2d``: the binomial filter [1, 2, 1] / 4 along each axis,
  reflection-padded by one, then every other row and column. Keras has no reflection
  padding layer, so the blur is built from pools: a 2-pool gives the means of neighbours,
  a second, pad-excluding one the [1, 2, 1] / 4 filter and its reflected last row, and the
  first row, the reflected one (the mean of rows 0 and 1), is joined in front. The result
  is the same numbers for any size, including None, with built-in layers only and no
  weights to store.
"""

from keras import layers

from kresnet import naming

#: A stride larger than any image: a 1x1 pool with it keeps the first row (or column) only.
_FIRST_ONLY = 2 ** 20


def blur(x, strides, base, data_format):
    """Reflection-padded [1, 2, 1] / 4 blur on both axes, then the ``strides`` subsampling
    (none at stride 1); layers named after ``base`` (:func:`kresnet.naming.blur`).

    >>> import keras, numpy as np
    >>> x = keras.Input((5, 5, 1))
    >>> y = keras.Model(x, blur(x, (2, 2), "b", "channels_last"))
    >>> out = y(np.arange(25, dtype="float32").reshape(1, 5, 5, 1))
    >>> np.asarray(out)[0, :, :, 0].tolist()
    [[3.0, 4.5, 6.0], [10.5, 12.0, 13.5], [18.0, 19.5, 21.0]]
    """
    names = naming.blur(base)
    first = data_format == "channels_first"
    for axis, window, edge, join in (("rows", (2, 1), (_FIRST_ONLY, 1), 2 if first else 1),
                                     ("cols", (1, 2), (1, _FIRST_ONLY), 3 if first else 2)):
        pair = layers.AveragePooling2D(window, strides=1, data_format=data_format,
                                       name=names[f"{axis}_pair"])(x)
        # "same" pads after only and leaves the padding out of the mean: the last row is
        # the last pair, as reflection padding makes it.
        mean = layers.AveragePooling2D(window, strides=1, padding="same",
                                       data_format=data_format, name=names[f"{axis}_mean"])(pair)
        head = layers.MaxPooling2D(1, strides=edge, data_format=data_format,
                                   name=names[f"{axis}_edge"])(pair)
        x = layers.Concatenate(axis=join, name=names[axis])([head, mean])
    if max(strides) > 1:
        x = layers.MaxPooling2D(1, strides=strides, data_format=data_format,
                                name=names["stride"])(x)
    return x


def anti_alias(x, kind, strides, base, data_format):
    """Downsample ``x`` by ``strides`` with ``kind`` (``"avg"`` or ``"blur"``) as timm does:
    at stride 1 the average pool is left out and the blur still blurs (the first block of a
    stage that dilates instead of striding).

    >>> import keras
    >>> y = anti_alias(keras.Input((8, 8, 4)), "avg", (2, 2), "pool1", "channels_last")
    >>> tuple(y.shape), y._keras_history.operation.name
    ((None, 4, 4, 4), 'pool1')
    """
    if kind == "blur":
        return blur(x, strides, base, data_format)
    if max(strides) == 1:
        return x
    return layers.AveragePooling2D(strides, strides=strides, data_format=data_format,
                                   name=base)(x)

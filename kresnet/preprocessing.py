"""What a trained ResNet expects its input to be: ``preprocess_input`` and its constants.

Three conventions cover the published ResNets:

- ``"caffe"``: RGB to BGR, then the mean pixel of ImageNet subtracted, on 0-255 images, no
  scaling: the Caffe ResNets of He et al. (2015) and keras.applications' ResNet50/101/152,
  whose ``keras.applications.resnet.preprocess_input`` this equals value for value.
- ``"torch"``: 0-255 scaled to 0-1, then each RGB channel standardised with ImageNet's mean
  and standard deviation: torchvision's and most of timm's weights.
- ``"tf"``: 0-255 scaled to [-1, 1]: keras.applications' ResNet50V2/101V2/152V2.
"""

from typing import Optional

import keras
import numpy as np

from kresnet import naming, validation

MODES = ("caffe", "torch", "tf")

#: The Caffe models' mean pixel, in BGR order (He et al.'s released ResNet-50/101/152).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: ImageNet's per-channel mean and standard deviation of 0-1 RGB images (torchvision, timm).
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def _checked(x, data_format, mode):
    """The channel axis, after the checks, before any arithmetic."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError("`x` must be a NumPy array, a nested list of numbers or a tensor. "
                        f"Received: x of type {type(x).__name__}")
    validation.one_of("mode", mode, MODES)
    if data_format is None:
        data_format = keras.config.image_data_format()
    validation.one_of("data_format", data_format, ("channels_last", "channels_first"))
    shape = tuple(x.shape)
    if len(shape) not in (3, 4):
        raise ValueError("`x` must be an image (3 axes) or a batch of images (4 axes). "
                         f"Received: x with shape {validation.shape_text(shape)}")
    axis = -1 if data_format == "channels_last" else len(shape) - 3
    if shape[axis] != 3:
        raise ValueError(f"`x` must have 3 (RGB) channels on axis {axis} for "
                         f"data_format={data_format!r}. Received: x with shape "
                         f"{validation.shape_text(shape)}")
    return axis


def _per_channel(values, ndim, axis, dtype):
    """``values`` shaped to broadcast along the channel axis of an ``ndim``-axis array."""
    shape = [1] * ndim
    shape[axis] = 3
    return np.asarray(values, dtype=dtype).reshape(shape)


def preprocess_input(x, data_format: Optional[str] = None, mode: Optional[str] = None,
                     weights: Optional[str] = None):
    """Images with values 0-255 (RGB) as a ResNet trained under ``mode`` expects them.

    ``x`` is a NumPy array (or a nested list), a backend tensor or a symbolic Keras tensor,
    of one image or a batch, RGB, in ``data_format`` (Keras' image data format by default).
    Integer arrays become ``keras.config.floatx()``. Unlike keras.applications' function,
    a NumPy input is never changed in place. The default ``mode="caffe"`` is
    ``keras.applications.resnet.preprocess_input`` exactly, so it replaces the tutorial's
    ``resnet_preprocess``; ``"torch"`` is for torchvision's and timm's weights, ``"tf"``
    for keras.applications' V2 nets (see the module docstring). ``weights``, a name of
    :data:`kresnet.WEIGHTS`, makes the default mode (and, for ``"torch"``, the mean and
    std) those of the weights: ``preprocess_input(x, weights="resnet50d.ra4_e3600_r224_in1k")``
    normalises with timm's 0.5 / 0.5.

    >>> import numpy as np
    >>> import kresnet
    >>> x = np.full((1, 2, 2, 3), 255, dtype="uint8")
    >>> [round(float(v), 3) for v in kresnet.preprocess_input(x)[0, 0, 0]]  # BGR - mean
    [151.061, 138.221, 131.32]
    >>> [round(float(v), 4) for v in kresnet.preprocess_input(x, mode="torch")[0, 0, 0]]
    [2.2489, 2.4286, 2.64]
    >>> kresnet.preprocess_input(x, mode="tf")[0, 0, 0].tolist()
    [1.0, 1.0, 1.0]
    >>> y = kresnet.preprocess_input(x, weights="resnet50.tv2_in1k")
    >>> [round(float(v), 4) for v in y[0, 0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    mean, std = TORCH_MEAN, TORCH_STD
    if weights is not None:
        from kresnet.registry import lookup  # noqa: PLC0415

        entry = lookup(weights, "weights")
        if mode is None:
            mode = entry.mode
        if mode == "torch" and entry.mode == "torch":
            mean, std = entry.mean, entry.std
    if mode is None:
        mode = "caffe"
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    axis = _checked(x, data_format, mode)
    if isinstance(x, np.ndarray):
        # keras.applications' order of operations, on a copy, so that the values are its
        # own to the last bit.
        x = x.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else keras.config.floatx())
        if mode == "tf":
            x /= 127.5
            x -= 1.0
            return x
        if mode == "caffe":
            x = np.flip(x, axis=axis) - _per_channel(CAFFE_MEAN_BGR, x.ndim, axis, x.dtype)
            return x
        x /= 255.0
        x -= _per_channel(mean, x.ndim, axis, x.dtype)
        x /= _per_channel(std, x.ndim, axis, x.dtype)
        return x
    ops = keras.ops
    if not keras.backend.is_float_dtype(x.dtype):
        x = ops.cast(x, keras.config.floatx())
    if mode == "tf":
        return x / 127.5 - 1.0
    ndim = len(x.shape)
    if mode == "caffe":
        x = ops.stack([ops.take(x, i, axis=axis) for i in (2, 1, 0)], axis=axis)
        mean = CAFFE_MEAN_BGR
    else:
        x = x / 255.0
    x = x + ops.convert_to_tensor(-_per_channel(mean, ndim, axis, "float64"), dtype=x.dtype)
    if mode == "torch":
        x = x / ops.convert_to_tensor(_per_channel(std, ndim, axis, "float64"),
                                      dtype=x.dtype)
    return x


def preprocessing_layers(x, mode: str = "caffe", mean=None, std=None, prefix: str = "",
                         data_format: Optional[str] = None):
    """Built-in Keras layers on ``x`` (0-255 RGB images) that give what
    :func:`preprocess_input` gives for ``mode``, so that a saved model takes raw images and
    still loads without kresnet. ``"caffe"``: a fixed 1x1 conv (RGB to BGR minus the mean
    pixel, exact); ``"torch"``: ``Rescaling(1/255)`` then ``Normalization`` with ``mean``
    and ``std`` (ImageNet's by default); ``"tf"``: ``Rescaling(1/127.5, offset=-1)``. The
    layers are named by :class:`kresnet.naming.PreprocessNames` and are not trainable.

    >>> import keras, numpy as np
    >>> x = keras.Input((4, 4, 3))
    >>> model = keras.Model(x, preprocessing_layers(x, "torch"))
    >>> image = np.full((1, 4, 4, 3), 255.0, "float32")
    >>> bool(np.allclose(model(image), preprocess_input(image, mode="torch"), atol=1e-5))
    True
    """
    validation.one_of("mode", mode, MODES)
    if data_format is None:
        data_format = keras.config.image_data_format()
    names = naming.PreprocessNames(prefix)
    axis = -1 if data_format == "channels_last" else 1
    if mode == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=names.rescale)(x)
    if mode == "caffe":
        kernel = np.zeros((1, 1, 3, 3), "float32")
        for channel in range(3):
            kernel[0, 0, 2 - channel, channel] = 1.0  # output channel c reads input 2 - c
        conv = keras.layers.Conv2D(
            3, 1, data_format=data_format, name=names.bgr, trainable=False,
            kernel_initializer=keras.initializers.Constant(kernel.tolist()),
            bias_initializer=keras.initializers.Constant([-m for m in CAFFE_MEAN_BGR]))
        return conv(x)
    mean = TORCH_MEAN if mean is None else tuple(mean)
    std = TORCH_STD if std is None else tuple(std)
    x = keras.layers.Rescaling(1 / 255, name=names.rescale)(x)
    return keras.layers.Normalization(axis=axis, mean=list(mean),
                                      variance=[s * s for s in std], name=names.normalize)(x)

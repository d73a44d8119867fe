"""Options shared by every conv/BN/ReLU that kresnet builds, and the three helpers that build them.

Blocks, stems and heads all go through :class:`Options` so that a setting such as
``use_bias`` or ``bn_momentum`` means the same thing everywhere.
"""

from dataclasses import dataclass

import keras
from keras import layers

from kresnet import validation
from kresnet.config import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, LAYER_OPTIONS

@dataclass(frozen=True)
class Options:
    """Layer settings of one network.

    >>> Options(use_bias=False).bn_axis in (1, -1)
    True
    """

    use_bias: bool = True
    bn_epsilon: float = BN_EPSILON
    bn_momentum: float = BN_MOMENTUM
    kernel_initializer: object = KERNEL_INITIALIZER
    name_prefix: str = ""
    weight_decay: float = 0.0
    norm: str = "batch"
    norm_groups: int = 32
    data_format: str = None

    def __post_init__(self):
        if self.data_format is None:
            object.__setattr__(self, "data_format", keras.config.image_data_format())

    @classmethod
    def of(cls, values):
        """The layer settings of a :class:`kresnet.config.ResNetConfig` or of a dict of
        checked layer options (missing ones take their defaults)."""
        get = values.get if isinstance(values, dict) else \
            lambda key, default: getattr(values, key)
        return cls(**{key: get(key, getattr(cls, key)) for key in LAYER_OPTIONS})

    def regularizer(self):
        """L2 of ``weight_decay / 2``: its gradient is ``weight_decay * w``, the weight decay
        of Caffe, PyTorch and the paper (1e-4), so their values can be used as they are."""
        if not self.weight_decay:
            return None
        return keras.regularizers.L2(self.weight_decay / 2)

    @property
    def bn_axis(self):
        return 1 if self.data_format == "channels_first" else -1

    def conv(self, x, filters, kernel_size, strides, name, pad_name=None, groups=1,
             use_bias=None, activation=None, dilation=1):
        """Conv2D; a strided conv wider than 1x1 gets explicit symmetric zero padding.

        TensorFlow's ``padding="same"`` pads a strided conv on the bottom/right only;
        explicit padding puts the windows where Caffe, torchvision and keras.applications
        put them, so the same weights give the same numbers.
        """
        kernel_size = validation.int_pair("kernel_size", kernel_size, "the kernel size")
        strides = validation.int_pair("strides", strides, "the stride")
        padding = "same"
        if max(strides) > 1 and max(kernel_size) > 1:
            pad = tuple((k // 2, k // 2) for k in kernel_size)
            x = layers.ZeroPadding2D(pad, data_format=self.data_format, name=pad_name)(x)
            padding = "valid"
        return layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, groups=groups,
            dilation_rate=dilation, activation=activation,
            use_bias=self.use_bias if use_bias is None else use_bias,
            kernel_initializer=self.kernel_initializer, kernel_regularizer=self.regularizer(),
            data_format=self.data_format, name=name)(x)

    def bn(self, x, name, zero_gamma=False):
        """The normalisation layer (``norm``): BatchNormalization or GroupNormalization,
        named ``bn...`` either way, as the Caffe names call every normalisation."""
        if self.norm == "group":
            return layers.GroupNormalization(
                self.norm_groups, axis=self.bn_axis, epsilon=self.bn_epsilon,
                gamma_initializer="zeros" if zero_gamma else "ones", name=name)(x)
        return layers.BatchNormalization(
            axis=self.bn_axis, epsilon=self.bn_epsilon, momentum=self.bn_momentum,
            gamma_initializer="zeros" if zero_gamma else "ones", name=name)(x)

    def dense(self, x, units, activation, name, dtype=None):
        return layers.Dense(units, activation=activation, kernel_regularizer=self.regularizer(),
                            dtype=dtype, name=name)(x)

    def classifier(self, x, units, activation, name):
        """The last Dense layer; float32 under a mixed-precision policy, so that a softmax
        in float16 cannot round probabilities near 0 and 1 (Keras' mixed-precision guide)."""
        mixed = keras.config.dtype_policy().name.startswith("mixed_")
        return self.dense(x, units, activation, name, dtype="float32" if mixed else None)

    @staticmethod
    def relu(x, name):
        return layers.Activation("relu", name=name)(x)

"""Residual blocks as plain functions on Keras tensors.

``identity_block`` and ``conv_block`` keep the tutorial's signatures. Three filters build
the bottleneck block (1x1 -> k x k -> 1x1), two build the basic block of ResNet-18/34
(k x k -> k x k). Layer names come from :class:`kresnet.naming.BlockNames`.
"""

from keras import layers

from kresnet import validation
from kresnet.naming import BlockNames
from kresnet.options import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, Options

_BRANCHES = ("2a", "2b", "2c")


def residual_block(x, kernel_size, filters, names, strides, projection, options):
    """Build one block from checked arguments; the public functions below check them first.

    The stride sits on the first conv of the residual branch: the 1x1 conv of a bottleneck
    (the original paper's and Caffe's placement) or the first k x k conv of a basic block.
    """
    if len(filters) == 3:
        kernels = ((1, 1), kernel_size, (1, 1))
    else:
        kernels = (kernel_size, kernel_size)
    shortcut = x
    if projection:
        shortcut = options.conv(x, filters[-1], 1, strides, names.conv("1"))
        shortcut = options.bn(shortcut, names.bn("1"))
    last = len(filters) - 1
    for i, (n, kernel, branch) in enumerate(zip(filters, kernels, _BRANCHES)):
        x = options.conv(x, n, kernel, strides if i == 0 else 1, names.conv(branch),
                         pad_name=names.pad(branch))
        x = options.bn(x, names.bn(branch))
        if i < last:
            x = options.relu(x, names.relu(branch))
    x = layers.Add(name=names.sum)([x, shortcut])
    return options.relu(x, names.out)


def _checked_block(input_tensor, middle_kernel_size, filters, stage, block, strides,
                   projection, use_bias, bn_epsilon, bn_momentum, kernel_initializer,
                   name_prefix):
    kernel_size = validation.kernel_size(middle_kernel_size)
    filters = validation.filters(filters)
    validation.stage_and_block(stage, block)
    strides = validation.strides(strides)
    options = Options.checked(use_bias, bn_epsilon, bn_momentum, kernel_initializer,
                              name_prefix)
    validation.input_tensor(input_tensor)
    if input_tensor is None:
        raise TypeError("`input_tensor` must be a Keras tensor, not None.")
    names = BlockNames(stage, block, options.name_prefix)
    channels = validation.channels_of(input_tensor, options.data_format)
    if not projection and channels != filters[-1]:
        raise ValueError(
            f"identity_block stage={stage!r} block={block!r}: the input has {channels} "
            f"channels but the block outputs filters[-1]={filters[-1]}; the shortcut adds "
            "them, so they must be equal. Use conv_block to change the channel count.")
    validation.unused_names(input_tensor, names.all(),
                            f"Block stage={stage!r} block={block!r} ({names.sum})")
    return residual_block(input_tensor, kernel_size, filters, names, strides, projection,
                          options)


def identity_block(input_tensor, middle_kernel_size, filters, stage, block, *,
                   use_bias=True, bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM,
                   kernel_initializer=KERNEL_INITIALIZER, name_prefix=""):
    """Residual block whose shortcut is the identity; the input must have ``filters[-1]`` channels.

    Args:
        input_tensor: Keras tensor.
        middle_kernel_size: kernel of the middle conv (bottleneck) or of both convs (basic):
            a positive odd int or a pair.
        filters: ``(f1, f2, f3)`` for a bottleneck, ``(f1, f2)`` for a basic block.
        stage, block: stage number and block label; layers are named ``res{stage}{block}_...``.

    >>> import keras
    >>> x = keras.Input((56, 56, 256))
    >>> y = identity_block(x, 3, [64, 64, 256], stage=2, block="b")
    >>> tuple(y.shape), y._keras_history.operation.name
    ((None, 56, 56, 256), 'res2b_relu')
    """
    return _checked_block(input_tensor, middle_kernel_size, filters, stage, block, 1, False,
                          use_bias, bn_epsilon, bn_momentum, kernel_initializer, name_prefix)


def conv_block(input_tensor, middle_kernel_size, filters, stage, block, strides=(2, 2), *,
               use_bias=True, bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM,
               kernel_initializer=KERNEL_INITIALIZER, name_prefix=""):
    """Residual block with a projection shortcut: a 1x1 conv with ``strides`` plus BN.

    Used where a stage starts: it changes the channel count and, with ``strides=(2, 2)``,
    halves the height and width. Arguments as in :func:`identity_block`.

    >>> import keras
    >>> x = keras.Input((56, 56, 64))
    >>> y = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1))
    >>> tuple(y.shape)
    (None, 56, 56, 256)
    """
    return _checked_block(input_tensor, middle_kernel_size, filters, stage, block, strides, True,
                          use_bias, bn_epsilon, bn_momentum, kernel_initializer, name_prefix)

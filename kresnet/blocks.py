"""Residual blocks as plain functions on Keras tensors.

``identity_block`` and ``conv_block`` keep the tutorial's signatures. Three filters build
the bottleneck block (1x1 -> k x k -> 1x1), two build the basic block of ResNet-18/34
(k x k -> k x k). Every variant is a setting of :class:`BlockStyle`; layer names come from
:class:`kresnet.naming.BlockNames`.
"""

from dataclasses import dataclass

from keras import layers

from kresnet import validation
from kresnet.naming import BlockNames
from kresnet.options import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, Options

_BRANCHES = ("2a", "2b", "2c")
STRIDE_ON = ("1x1", "3x3")
SHORTCUTS = ("B", "A", "C", "avg")


@dataclass(frozen=True)
class BlockStyle:
    """How a block is built, beyond its filters.

    - ``preact``: pre-activation (ResNet v2): BN and ReLU open the block, none follow the sum.
    - ``stride_on``: in a bottleneck, ``"1x1"`` strides the first 1x1 conv (paper, Caffe),
      ``"3x3"`` the middle conv (torchvision "v1.5", ResNet-B). Basic blocks always stride
      their first 3x3 conv.
    - ``shortcut``: ``"B"`` projects where the channel count changes, ``"A"`` subsamples and
      pads new channels with zeros, ``"C"`` projects on every block, ``"avg"`` (ResNet-D)
      average-pools 2x2/2 before a stride-1 projection.
    - ``groups``: groups of the middle conv of a bottleneck (ResNeXt).
    - ``se_ratio``: squeeze-and-excitation on the residual branch; 0 for none.
    - ``zero_init_residual``: the branch's last BN starts with gamma = 0 (Goyal et al. 2017).

    >>> BlockStyle(stride_on="3x3").strided_conv(3), BlockStyle().strided_conv(2)
    (1, 0)
    """

    preact: bool = False
    stride_on: str = "1x1"
    shortcut: str = "B"
    groups: int = 1
    se_ratio: float = 0.0
    zero_init_residual: bool = False

    def strided_conv(self, n_convs):
        """Index of the conv of the residual branch that carries the stride."""
        return 1 if n_convs == 3 and self.stride_on == "3x3" else 0

    def shortcut_kind(self, in_channels, out_channels, strides):
        """``identity``, ``subsample``, ``zeros`` (A), ``projection`` or ``avg_projection``."""
        resize = max(strides) > 1
        if self.shortcut == "C":
            return "projection"
        if in_channels == out_channels:
            return "subsample" if resize else "identity"
        if self.shortcut == "A":
            return "zeros"
        return "avg_projection" if self.shortcut == "avg" else "projection"


def check_style(preact=False, stride_on="1x1", shortcut="B", groups=1, se_ratio=0.0,
                zero_init_residual=False):
    """A :class:`BlockStyle` from user arguments, refusing values or pairs that do not fit."""
    style = BlockStyle(
        preact=validation.boolean("preact", preact),
        stride_on=validation.one_of("stride_on", stride_on, STRIDE_ON),
        shortcut=validation.one_of("shortcut", shortcut, SHORTCUTS),
        groups=validation.positive_int("groups", groups),
        se_ratio=validation.number("se_ratio", se_ratio, 0, 1),
        zero_init_residual=validation.boolean("zero_init_residual", zero_init_residual))
    if style.preact and style.zero_init_residual:
        raise ValueError("`zero_init_residual=True` does not go with `preact=True`: a "
                         "pre-activation branch ends in a conv, not a BN whose gamma could "
                         "start at zero.")
    return style


def _zero_channels(x, out_channels, names, options):
    """Option A's new channels, zeros appended after the input's, with built-in layers only:
    ZeroPadding2D pads the channel axis once it is moved to the first spatial position."""
    extra = out_channels - validation.channels_of(x, options.data_format)
    if options.data_format == "channels_first":
        return layers.ZeroPadding2D(((0, extra), (0, 0)), data_format="channels_last",
                                    name=names.shortcut("zeros"))(x)
    x = layers.Permute((3, 1, 2), name=names.shortcut("permute"))(x)
    x = layers.ZeroPadding2D(((0, extra), (0, 0)), data_format="channels_last",
                             name=names.shortcut("zeros"))(x)
    return layers.Permute((2, 3, 1), name=names.shortcut("unpermute"))(x)


def squeeze_excite(x, ratio, names, options):
    """Hu et al. 2018: global average pool, 1x1 conv to ``channels * ratio`` (ReLU), 1x1 conv
    back (sigmoid), scale the branch by the result."""
    channels = validation.channels_of(x, options.data_format)
    scale = layers.GlobalAveragePooling2D(data_format=options.data_format, keepdims=True,
                                          name=names.se("pool"))(x)
    scale = options.conv(scale, max(1, round(channels * ratio)), 1, 1, names.se("squeeze"),
                         use_bias=True, activation="relu")
    scale = options.conv(scale, channels, 1, 1, names.se("excite"), use_bias=True,
                         activation="sigmoid")
    return layers.Multiply(name=names.se("scale"))([x, scale])


def residual_block(x, kernel_size, filters, names, strides, shortcut_kind, style, options):
    """Build one block from checked arguments; the public functions below check them first."""
    strides = validation.int_pair("strides", strides, "the stride")
    n_convs = len(filters)
    kernels = ((1, 1), kernel_size, (1, 1)) if n_convs == 3 else (kernel_size, kernel_size)
    strided = style.strided_conv(n_convs)
    preactivated = x
    if style.preact:
        preactivated = options.relu(options.bn(x, names.preact_bn), names.preact_relu)
    branch = preactivated
    for i, (n, kernel, role) in enumerate(zip(filters, kernels, _BRANCHES)):
        last = i == n_convs - 1
        branch = options.conv(
            branch, n, kernel, strides if i == strided else 1, names.conv(role),
            pad_name=names.pad(role), groups=style.groups if n_convs == 3 and i == 1 else 1,
            # In a pre-activation block a conv followed by BN needs no bias (keras' ResNetV2).
            use_bias=options.use_bias and not (style.preact and not last))
        if not (style.preact and last):
            branch = options.bn(branch, names.bn(role), zero_gamma=last and
                                style.zero_init_residual)
        if not last:
            branch = options.relu(branch, names.relu(role))
    if style.se_ratio:
        branch = squeeze_excite(branch, style.se_ratio, names, options)
    shortcut = _shortcut(x, preactivated, shortcut_kind, filters[-1], strides, names,
                             style, options)
    x = layers.Add(name=names.sum)([branch, shortcut])
    return x if style.preact else options.relu(x, names.out)


def _shortcut(x, preactivated, kind, out_channels, strides, names, style, options):
    if kind == "identity":
        return x
    if kind in ("subsample", "zeros"):
        if max(strides) > 1:
            # A 1x1 max pooling with a stride keeps every other pixel, like x[:, ::2, ::2].
            x = layers.MaxPooling2D(1, strides=strides, data_format=options.data_format,
                                    name=names.shortcut("pool"))(x)
        return _zero_channels(x, out_channels, names, options) if kind == "zeros" else x
    source = preactivated
    if kind == "avg_projection" and max(strides) > 1:
        source = layers.AveragePooling2D(strides, strides=strides, padding="same",
                                         data_format=options.data_format,
                                         name=names.shortcut("pool"))(source)
        strides = (1, 1)
    shortcut = options.conv(source, out_channels, 1, strides, names.conv("1"))
    return shortcut if style.preact else options.bn(shortcut, names.bn("1"))


def _checked_block(input_tensor, middle_kernel_size, filters, stage, block, strides,
                   projection, options_kwargs, style_kwargs):
    if validation.input_tensor(input_tensor) is None:
        raise TypeError("`input_tensor` must be a Keras tensor, not None.")
    kernel_size = validation.kernel_size(middle_kernel_size)
    filters = validation.filters(filters)
    validation.stage_and_block(stage, block)
    strides = validation.strides(strides)
    options = Options.checked(**options_kwargs)
    style = check_style(**style_kwargs)
    if style.groups > 1 and (len(filters) != 3 or filters[0] % style.groups
                             or filters[1] % style.groups):
        raise ValueError(f"`groups`={style.groups} must divide the middle conv's input and "
                         f"output widths of a bottleneck, filters[0] and filters[1]; "
                         f"`filters`={list(filters)} does not fit.")
    names = BlockNames(stage, block, options.name_prefix)
    channels = validation.channels_of(input_tensor, options.data_format)
    if not projection and channels != filters[-1]:
        raise ValueError(
            f"identity_block stage={stage!r} block={block!r}: the input has {channels} "
            f"channels but the block outputs filters[-1]={filters[-1]}; the shortcut adds "
            "them, so they must be equal. Use conv_block to change the channel count.")
    if projection:
        kind = {"B": "projection", "C": "projection", "avg": "avg_projection",
                "A": "zeros" if channels != filters[-1] else "subsample"}[style.shortcut]
    else:
        kind = "projection" if style.shortcut == "C" else "identity"
    if kind == "zeros" and channels > filters[-1]:
        raise ValueError(f"conv_block stage={stage!r} block={block!r}: `shortcut`='A' pads "
                         f"channels with zeros, so it cannot shrink {channels} input channels "
                         f"to filters[-1]={filters[-1]}.")
    validation.unused_names(input_tensor, names.all(),
                            f"Block stage={stage!r} block={block!r} ({names.sum})")
    return residual_block(input_tensor, kernel_size, filters, names, strides, kind, style,
                          options)


def identity_block(input_tensor, middle_kernel_size, filters, stage, block, *,
                   use_bias=True, bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM,
                   kernel_initializer=KERNEL_INITIALIZER, name_prefix="", weight_decay=0.0,
                   preact=False, stride_on="1x1", shortcut="B", groups=1, se_ratio=0.0,
                   zero_init_residual=False):
    """Residual block whose shortcut is the identity; the input must have ``filters[-1]`` channels.

    Args:
        input_tensor: Keras tensor.
        middle_kernel_size: kernel of the middle conv (bottleneck) or of both convs (basic):
            a positive odd int or a pair.
        filters: ``(f1, f2, f3)`` for a bottleneck, ``(f1, f2)`` for a basic block.
        stage, block: stage number and block label; layers are named ``res{stage}{block}_...``.
        Keyword options: as in :func:`kresnet.create_resnet`.

    >>> import keras
    >>> x = keras.Input((56, 56, 256))
    >>> y = identity_block(x, 3, [64, 64, 256], stage=2, block="b")
    >>> tuple(y.shape), y._keras_history.operation.name
    ((None, 56, 56, 256), 'res2b_relu')
    """
    return _checked_block(
        input_tensor, middle_kernel_size, filters, stage, block, 1, False,
        dict(use_bias=use_bias, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum,
             kernel_initializer=kernel_initializer, name_prefix=name_prefix,
             weight_decay=weight_decay),
        dict(preact=preact, stride_on=stride_on, shortcut=shortcut, groups=groups,
             se_ratio=se_ratio, zero_init_residual=zero_init_residual))


def conv_block(input_tensor, middle_kernel_size, filters, stage, block, strides=(2, 2), *,
               use_bias=True, bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM,
               kernel_initializer=KERNEL_INITIALIZER, name_prefix="", weight_decay=0.0,
               preact=False, stride_on="1x1", shortcut="B", groups=1, se_ratio=0.0,
               zero_init_residual=False):
    """Residual block with a projection shortcut: a 1x1 conv with ``strides`` plus BN.

    Used where a stage starts: it changes the channel count and, with ``strides=(2, 2)``,
    halves the height and width. With ``shortcut="A"`` or ``"avg"`` the shortcut is that
    option's instead. Arguments as in :func:`identity_block`.

    >>> import keras
    >>> x = keras.Input((56, 56, 64))
    >>> y = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1))
    >>> tuple(y.shape)
    (None, 56, 56, 256)
    """
    return _checked_block(
        input_tensor, middle_kernel_size, filters, stage, block, strides, True,
        dict(use_bias=use_bias, bn_epsilon=bn_epsilon, bn_momentum=bn_momentum,
             kernel_initializer=kernel_initializer, name_prefix=name_prefix,
             weight_decay=weight_decay),
        dict(preact=preact, stride_on=stride_on, shortcut=shortcut, groups=groups,
             se_ratio=se_ratio, zero_init_residual=zero_init_residual))

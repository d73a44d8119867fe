"""Residual blocks as plain functions on Keras tensors.

``identity_block`` and ``conv_block`` keep the tutorial's signatures. Three filters build
the bottleneck block (1x1 -> k x k -> 1x1), two build the basic block of ResNet-18/34
(k x k -> k x k). Every variant is a setting of :class:`kresnet.config.BlockStyle`; layer names come from
:class:`kresnet.naming.BlockNames`. A stage is a loop over blocks (:func:`build_stage`).
"""

import dataclasses

from keras import layers

from kresnet import validation
from kresnet.downsampling import anti_alias
from kresnet.config import BLOCK_OPTIONS, LAYER_OPTIONS, BlockStyle, keyword_signature, \
    part_config, reject_unknown
from kresnet.naming import BlockNames
from kresnet.options import Options

_BRANCHES = ("2a", "2b", "2c")
#: The keyword options of :func:`conv_block` and :func:`identity_block`.
OPTIONS = LAYER_OPTIONS + BLOCK_OPTIONS


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


def squeeze_excite(x, style, names, options):
    """Hu et al. 2018: global average pool, 1x1 conv to ``channels * se_ratio`` (ReLU; the
    width rounded as :meth:`BlockStyle.squeeze_width` says), 1x1 conv back (sigmoid), scale
    the branch by the result."""
    channels = validation.channels_of(x, options.data_format)
    scale = layers.GlobalAveragePooling2D(data_format=options.data_format, keepdims=True,
                                          name=names.se("pool"))(x)
    scale = options.conv(scale, style.squeeze_width(channels), 1, 1, names.se("squeeze"),
                         use_bias=True, activation="relu")
    scale = options.conv(scale, channels, 1, 1, names.se("excite"), use_bias=True,
                         activation="sigmoid")
    return layers.Multiply(name=names.se("scale"))([x, scale])


def efficient_channel_attention(x, names, options):
    """Wang et al. 2020 (ECA-Net), as timm's ``EcaModule``: global average pool, a 1-D conv
    without bias across the channels (kernel :meth:`BlockStyle.eca_kernel`), sigmoid, scale
    the branch by the result. The channels become a 1-D sequence by a Reshape."""
    channels = validation.channels_of(x, options.data_format)
    scale = layers.GlobalAveragePooling2D(data_format=options.data_format,
                                          name=names.eca("pool"))(x)
    scale = layers.Reshape((channels, 1), name=names.eca("reshape"))(scale)
    scale = layers.Conv1D(1, BlockStyle.eca_kernel(channels), padding="same", use_bias=False,
                          activation="sigmoid", kernel_initializer=options.kernel_initializer,
                          data_format="channels_last", name=names.eca("conv"))(scale)
    shape = (channels, 1, 1) if options.data_format == "channels_first" else (1, 1, channels)
    scale = layers.Reshape(shape, name=names.eca("expand"))(scale)
    return layers.Multiply(name=names.eca("scale"))([x, scale])


def residual_block(x, kernel_size, filters, names, strides, shortcut_kind, style, options,
                   drop_path=None, dilation=1, first_dilation=1):
    """Build one block from checked arguments; the public functions below check them first.
    ``drop_path``: this block's stochastic depth rate (``style.drop_path_rate`` if None)."""
    strides = validation.int_pair("strides", strides, "the stride")
    n_convs = len(filters)
    kernels = ((1, 1), kernel_size, (1, 1)) if n_convs == 3 else (kernel_size, kernel_size)
    # Dilation of each conv: the 3x3s only, the first of them at the previous stage's.
    dilations = (1, first_dilation, 1) if n_convs == 3 else (first_dilation, dilation)
    strided = style.strided_conv(n_convs)
    # timm anti-aliases where the block strides, and where a dilated stage begins.
    aliased = style.anti_alias is not None and (max(strides) > 1 or
                                                first_dilation != dilation)
    preactivated = x
    if style.preact:
        preactivated = options.relu(options.bn(x, names.preact_bn), names.preact_relu)
    branch = preactivated
    for i, (n, kernel, role) in enumerate(zip(filters, kernels, _BRANCHES)):
        last = i == n_convs - 1
        branch = options.conv(
            branch, n, kernel, strides if i == strided and not aliased else 1,
            names.conv(role), pad_name=names.pad(role),
            groups=style.groups if n_convs == 3 and i == 1 else 1, dilation=dilations[i],
            # In a pre-activation block a conv followed by BN needs no bias (keras' ResNetV2).
            use_bias=options.use_bias and not (style.preact and not last))
        if not (style.preact and last):
            branch = options.bn(branch, names.bn(role), zero_gamma=last and
                                style.zero_init_residual)
        if not last:
            branch = options.relu(branch, names.relu(role))
        if aliased and i == strided:
            branch = anti_alias(branch, style.anti_alias, strides, names.aa(role),
                                options.data_format)
    if style.se_ratio:
        branch = squeeze_excite(branch, style, names, options)
    if style.eca:
        branch = efficient_channel_attention(branch, names, options)
    rate = style.drop_path_rate if drop_path is None else drop_path
    if rate:
        # One draw per sample for the whole branch: stochastic depth (Huang et al. 2016);
        # survivors are scaled by 1 / (1 - rate), and in inference it is the identity.
        branch = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=names.drop_path)(branch)
    shortcut = _shortcut(x, preactivated, shortcut_kind, filters[-1], strides, names,
                         style, options, dilation)
    x = layers.Add(name=names.sum)([branch, shortcut])
    return x if style.preact else options.relu(x, names.out)


def _shortcut(x, preactivated, kind, out_channels, strides, names, style, options,
              dilation=1):
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
    elif kind == "avg_projection" and dilation > 1:
        # timm's AvgPool2dSame(2, stride 1) where a stage dilates: zeros after, then 2x2.
        source = layers.ZeroPadding2D(((0, 1), (0, 1)), data_format=options.data_format,
                                      name=names.pad("1"))(source)
        source = layers.AveragePooling2D(2, strides=1, data_format=options.data_format,
                                         name=names.shortcut("pool"))(source)
    shortcut = options.conv(source, out_channels, 1, strides, names.conv("1"))
    return shortcut if style.preact else options.bn(shortcut, names.bn("1"))


def build_stage(x, stage, kernel_size, style, options):
    """Build the planned blocks of one stage (a tuple of :class:`kresnet.config.BlockPlan`)."""
    for block in stage:
        x = residual_block(x, kernel_size, block.filters, block.names(options.name_prefix),
                           block.strides, block.shortcut, style, options, block.drop_path,
                           block.dilation, block.first_dilation)
    return x


def _checked_block(input_tensor, middle_kernel_size, filters, stage, block, strides,
                   projection, options, where):
    if validation.input_tensor(input_tensor) is None:
        raise TypeError("`input_tensor` must be a Keras tensor, not None.")
    kernel_size = validation.kernel_size(middle_kernel_size)
    filters = validation.filters(filters)
    validation.stage_and_block(stage, block)
    strides = validation.strides(strides)
    reject_unknown(options, OPTIONS, where)
    # The config runs every option's check and the checks of options that go together.
    normalised = list(filters)
    if options.get("preact"):  # the pre-activation BN normalises the block's input too
        normalised.append(validation.channels_of(validation.input_tensor(input_tensor),
                                                 Options().data_format))
    config, norm = part_config(options, "filters", normalised)
    style = BlockStyle.of(config)
    options = dataclasses.replace(Options.of(config), norm=norm)
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


def identity_block(input_tensor, middle_kernel_size, filters, stage, block, **options):
    """Residual block whose shortcut is the identity; the input must have ``filters[-1]`` channels.

    Args:
        input_tensor: Keras tensor.
        middle_kernel_size: kernel of the middle conv (bottleneck) or of both convs (basic):
            a positive odd int or a pair.
        filters: ``(f1, f2, f3)`` for a bottleneck, ``(f1, f2)`` for a basic block.
        stage, block: stage number and block label; layers are named ``res{stage}{block}_...``.
        Keyword options: the layer and block options of :class:`kresnet.ResNetConfig`.

    >>> import keras
    >>> x = keras.Input((56, 56, 256))
    >>> y = identity_block(x, 3, [64, 64, 256], stage=2, block="b")
    >>> tuple(y.shape), y._keras_history.operation.name
    ((None, 56, 56, 256), 'res2b_relu')
    """
    return _checked_block(input_tensor, middle_kernel_size, filters, stage, block, 1, False,
                          options, "identity_block")


def conv_block(input_tensor, middle_kernel_size, filters, stage, block, strides=(2, 2),
               **options):
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
    return _checked_block(input_tensor, middle_kernel_size, filters, stage, block, strides,
                          True, options, "conv_block")


identity_block.__signature__ = keyword_signature(identity_block, OPTIONS)
conv_block.__signature__ = keyword_signature(conv_block, OPTIONS)

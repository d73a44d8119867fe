"""``create_resnet`` and the keras.applications-style ``ResNet18`` ... ``ResNet152``.

A model is stem -> stages -> head. :func:`plan` turns a row of :data:`kresnet.depths.DEPTHS`
(or a custom stage list) and the variant options into the list of blocks to build; every
check runs before the first layer is created.
"""

from dataclasses import dataclass

import keras

from kresnet import heads, interop, naming, validation
from kresnet.blocks import BlockStyle, check_style, residual_block
from kresnet.depths import BASE_WIDTH, DEPTHS, FIRST_STAGE, block_filters, depth_of, stage_widths
from kresnet.features import feature_maps
from kresnet.options import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, Options
from kresnet.stems import STEM_STRIDES, build_stem, check_stem

DEFAULT_SIZE = 224
STRIDE_BLOCKS = ("first", "last")
OUTPUTS = ("final", "stages")


@dataclass(frozen=True)
class BlockPlan:
    """One block to build: where it sits, its filters, stride and shortcut kind."""

    stage: int
    label: str
    filters: tuple
    strides: int
    shortcut: str

    def names(self, prefix=""):
        return naming.BlockNames(self.stage, self.label, prefix)


@dataclass(frozen=True)
class Plan:
    """Everything :func:`create_resnet` builds, resolved and checked."""

    depth: int
    block_type: str
    blocks: tuple
    widths: tuple
    stem: str
    stem_widths: tuple
    style: BlockStyle
    stages: tuple  # one tuple of BlockPlan per stage

    @property
    def min_size(self):
        """Total downsampling: the smallest input height/width the network accepts."""
        strided = sum(1 for stage in self.stages for b in stage if b.strides > 1)
        return STEM_STRIDES[self.stem] * 2 ** strided

    @property
    def features(self):
        """Channels of the last stage's output."""
        return self.stages[-1][-1].filters[-1]


def plan(depth=50, blocks=None, block_type=None, widths=None, stem="classic", stem_width=None,
         stride_block="first", groups=1, width_per_group=BASE_WIDTH, **style):
    """Resolve a depth and the variant options into the blocks to build.

    ``depth`` picks a row of the table; ``blocks``, ``block_type`` and ``widths`` override
    it. The first block of every stage after the first halves the size (``stride_block=
    "last"``: the last block of every stage but the last, as keras.applications' ResNetV2).
    ``style`` takes the :class:`kresnet.blocks.BlockStyle` options.

    >>> p = plan(101)
    >>> p.block_type, p.blocks, [b.label for b in p.stages[1]]
    ('bottleneck', (3, 4, 23, 3), ['a', 'b1', 'b2', 'b3'])
    >>> plan(18, blocks=(1, 1)).depth, plan(50, groups=32, width_per_group=4).stages[0][0].filters
    (6, (128, 128, 256))
    """
    row = DEPTHS[validation.depth(depth)]
    block_type = row.block_type if block_type is None else validation.block_type(block_type)
    blocks = row.blocks if blocks is None else validation.blocks(blocks)
    # A stage list equal to the row's is that row: it keeps the Caffe labels (res4b22).
    custom = blocks != row.blocks
    widths = stage_widths(len(blocks)) if widths is None else _widths(widths, blocks)
    stem, stem_widths = check_stem(stem, stem_width)
    validation.one_of("stride_block", stride_block, STRIDE_BLOCKS)
    check_options(style, STYLE_OPTIONS, "plan")
    style = check_style(groups=groups, **style)
    width_per_group = validation.positive_int("width_per_group", width_per_group)
    if block_type == "basic" and (style.groups != 1 or width_per_group != BASE_WIDTH):
        raise ValueError(f"`groups`={style.groups} and `width_per_group`={width_per_group} "
                         "apply to bottleneck blocks only; `block_type`='basic' needs "
                         "groups=1 and width_per_group=64.")
    channels = stem_widths[-1]
    stages = []
    for index, (n_blocks, width) in enumerate(zip(blocks, widths)):
        stage = FIRST_STAGE + index
        numbered = None if custom else (stage in row.numbered_stages or None)
        filters = block_filters(width, block_type, style.groups, width_per_group)
        if not filters[0]:
            raise ValueError(
                f"`widths`[{index}]={width} with `width_per_group`={width_per_group} gives "
                f"stage {stage}'s bottlenecks a middle width of int({width} * "
                f"{width_per_group} / {BASE_WIDTH}) = 0 per group; the width times "
                f"`width_per_group` must be at least {BASE_WIDTH}.")
        stage_plan = []
        for i, label in enumerate(naming.stage_labels(n_blocks, numbered)):
            if stride_block == "first":
                strides = 2 if i == 0 and index > 0 else 1
            else:
                strides = 2 if i == n_blocks - 1 and index < len(blocks) - 1 else 1
            shortcut = style.shortcut_kind(channels, filters[-1], (strides, strides))
            if shortcut == "zeros" and filters[-1] < channels:
                narrows = f"`widths`={widths} narrows there" if index else \
                    f"`stem_width`={stem_widths} is wider than `widths`={widths} starts"
                raise ValueError(f"`shortcut`='A' pads channels with zeros, so it cannot shrink "
                                 f"{channels} channels to {filters[-1]} in stage {stage}; "
                                 f"{narrows}.")
            stage_plan.append(BlockPlan(stage, label, filters, strides, shortcut))
            channels = filters[-1]
        stages.append(tuple(stage_plan))
    return Plan(depth_of(blocks, block_type), block_type, blocks, widths, stem, stem_widths,
                style, tuple(stages))


def _widths(widths, blocks):
    if not isinstance(widths, (tuple, list)) or len(widths) != len(blocks):
        raise ValueError(f"`widths` must list one positive integer per stage of `blocks` "
                         f"({len(blocks)} stages). Received: widths={widths!r}")
    return tuple(validation.positive_int(f"widths[{i}]", w) for i, w in enumerate(widths))


def _planned_names(model_plan, prefix, classes):
    names = naming.StemNames(prefix).all() + naming.HeadNames(prefix).all(classes)
    for stage in model_plan.stages:
        for block in stage:
            names += block.names(prefix).all()
    return names


def _model_input(in_shape, input_tensor, model_plan, options, classes):
    """The input tensor to build on and the model's inputs, after checking both."""
    if input_tensor is None:
        height, width, channels = validation.spatial_shape("in_shape", in_shape,
                                                          model_plan.min_size)
        shape = (channels, height, width) if options.data_format == "channels_first" \
            else (height, width, channels)
        x = keras.Input(shape, name=naming.input_name(options.name_prefix))
        return x, x
    validation.input_tensor(input_tensor)
    validation.spatial_shape("input_tensor.shape[1:]", tuple(input_tensor.shape[1:]),
                             model_plan.min_size, options.data_format)
    validation.unused_names(input_tensor, _planned_names(model_plan, options.name_prefix,
                                                         classes), "The network")
    sources = keras.utils.get_source_inputs(input_tensor)
    # One source: the model takes a tensor, as when it builds its own Input (a one-item list
    # would make Keras warn on every call with a plain tensor).
    return input_tensor, sources[0] if len(sources) == 1 else sources


def _check_imagenet(model_plan, head, classes, channels, options, kernel_size):
    """``weights="imagenet"`` needs exactly a keras.applications configuration; say which
    argument departs from it before anything is built or downloaded."""
    style = model_plan.style
    keras_v2 = dict(preact=True, stride_on="3x3", stride_block="last")
    keras_v1 = dict(preact=False, stride_on="1x1", stride_block="first")
    have = dict(preact=style.preact, stride_on=style.stride_on,
                stride_block="last" if model_plan.stages[0][-1].strides > 1 else "first")
    wanted = {"depth": (model_plan.depth in (50, 101, 152) and model_plan.blocks ==
                        DEPTHS[model_plan.depth].blocks and model_plan.block_type ==
                        "bottleneck"),
              "widths": model_plan.widths == stage_widths(4),
              "stem": (model_plan.stem, model_plan.stem_widths) == ("classic", (64,)),
              "preact/stride_on/stride_block": have in (keras_v1, keras_v2),
              "shortcut": style.shortcut == "B", "groups": style.groups == 1,
              "width_per_group": model_plan.stages[0][0].filters[0] == 64,
              "se_ratio": not style.se_ratio, "middle_kernel_size": kernel_size == (3, 3),
              "use_bias": options.use_bias, "head": head in ("fc", None),
              "n_classes": head is None or classes == 1000, "in_shape": channels == 3}
    wrong = [argument for argument, ok in wanted.items() if not ok]
    if wrong:
        raise ValueError(
            "`weights`='imagenet' loads keras.applications' ResNet50/101/152(V2) weights, so "
            "the model must have their configuration (build it with kresnet.ResNet50 or "
            f"kresnet.build('resnet50v2')); these arguments differ: {', '.join(wrong)}.")


def create_resnet(in_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3), n_classes=10, depth=50, *,
                  blocks=None, block_type=None, widths=None, middle_kernel_size=3,
                  stem="classic", stem_width=None, preact=False, stride_on="1x1",
                  stride_block="first", shortcut="B", groups=1, width_per_group=BASE_WIDTH,
                  se_ratio=0.0, zero_init_residual=False, include_top=True, head="tutorial",
                  pooling=None, outputs="final", classifier_activation="softmax",
                  dropout=heads.TUTORIAL_DROPOUT, fc_units=heads.TUTORIAL_FC_UNITS,
                  weights=None, input_tensor=None, use_bias=True, bn_epsilon=BN_EPSILON,
                  bn_momentum=BN_MOMENTUM, kernel_initializer=KERNEL_INITIALIZER,
                  weight_decay=0.0, name_prefix="", name=None):
    """Build a ResNet as a Keras ``Model`` with Caffe-style layer names.

    With its defaults this is the tutorial's ResNet-50: the classic stem, stages 2-5 of
    [3, 4, 6, 3] bottleneck blocks, then ``avg_pool``, dropout 0.5, ``fc_01`` (Dense 200,
    relu), dropout 0.5 and ``fc_final`` (Dense ``n_classes``, softmax).

    Args:
        in_shape: ``(height, width, channels)``; height and width may be ``None``.
            Ignored when ``input_tensor`` is given.
        n_classes: classes of the classifier head.
        depth: 18, 34, 50, 101, 152 or 200 (a row of :data:`kresnet.DEPTHS`).
        blocks, block_type, widths: override the row's blocks per stage, block kind
            (``"basic"``/``"bottleneck"``) and stage widths (64, 128, 256, 512).
        middle_kernel_size: kernel of the middle conv of every block.
        stem, stem_width: ``"classic"``, ``"deep"`` or ``"cifar"`` and its width(s).
        preact, stride_on, shortcut, groups, se_ratio, zero_init_residual: see
            :class:`kresnet.blocks.BlockStyle`; ``stride_block``: ``"first"`` or ``"last"``
            block of a stage strides; ``width_per_group``: ResNeXt / wide ResNet widths.
        include_top, head: ``head`` is ``"tutorial"``, ``"fc"`` (``avg_pool`` + ``fc{n}``) or
            ``None``; ``include_top=False`` also means no head.
        pooling: without a head, ``None`` (4D output), ``"avg"`` or ``"max"``.
        outputs: ``"final"``, or ``"stages"`` for a headless multi-output backbone whose
            outputs are :func:`kresnet.feature_maps` (``{"C2": ..., "C5": ...}``).
        weights: ``None``, ``"imagenet"`` (keras.applications' weights, for the same
            configurations) or the path of a weights file, read by layer name with
            :func:`kresnet.load_weights`.
        use_bias, bn_epsilon, bn_momentum, kernel_initializer, weight_decay: layer settings
            (``weight_decay`` as in the paper and PyTorch: the gradient gains ``wd * w``).
        name_prefix: prepended to every layer name (two ResNets in one graph).

    >>> model = create_resnet((64, 64, 3), 10, depth=18)
    >>> model.name, model.output_shape, model.layers[1].name
    ('resnet18', (None, 10), 'conv1_pad')
    """
    model_plan = plan(depth, blocks, block_type, widths, stem, stem_width, stride_block,
                      groups, width_per_group, preact=preact, stride_on=stride_on,
                      shortcut=shortcut, se_ratio=se_ratio,
                      zero_init_residual=zero_init_residual)
    kernel_size = validation.kernel_size(middle_kernel_size)
    n_classes = validation.positive_int("n_classes", n_classes)
    include_top = validation.boolean("include_top", include_top)
    head = validation.head(head)  # checked even where include_top=False drops it
    if not include_top:
        head = None
    validation.pooling(pooling)
    if validation.one_of("outputs", outputs, OUTPUTS) == "stages" and head is not None:
        raise ValueError("`outputs`='stages' builds a headless backbone: pass "
                         "`include_top=False` (or `head=None`) with it.")
    validation.classifier_activation(classifier_activation)
    dropout = validation.number("dropout", dropout, 0, 1, high_open=True)
    fc_units = validation.positive_int("fc_units", fc_units)
    weights = validation.weights(weights)
    options = Options.checked(use_bias, bn_epsilon, bn_momentum, kernel_initializer,
                              name_prefix, weight_decay)
    name = validation.model_name(name) or naming.model_name(model_plan.depth, name_prefix)
    if weights == "imagenet":
        channels = in_shape[2] if input_tensor is None else \
            validation.channels_of(validation.input_tensor(input_tensor), options.data_format)
        _check_imagenet(model_plan, head, n_classes, channels, options, kernel_size)
    x, inputs = _model_input(in_shape, input_tensor, model_plan, options, n_classes)

    style = model_plan.style
    x = build_stem(x, model_plan.stem, model_plan.stem_widths, options, style.preact)
    for stage in model_plan.stages:
        for block in stage:
            x = residual_block(x, kernel_size, block.filters, block.names(options.name_prefix),
                               block.strides, block.shortcut, style, options)
    if style.preact:
        stem_names = naming.StemNames(options.name_prefix)
        x = options.relu(options.bn(x, stem_names.post_bn), stem_names.post_relu)
    x = heads.build_head(x, head, n_classes, classifier_activation, pooling, options,
                         dropout, fc_units)

    model = keras.Model(inputs, x, name=name)
    if outputs == "stages":
        model = keras.Model(inputs, feature_maps(model), name=name)
    if weights == "imagenet":
        weights = interop.imagenet_file(model_plan.depth, style.preact, head is not None)
    if weights is not None:
        interop.load_weights(model, weights)
    return model


#: Keyword options of ``create_resnet`` that the ``ResNet*`` functions pass through.
APPLICATIONS_OPTIONS = (
    "blocks", "block_type", "widths", "middle_kernel_size", "stem", "stem_width", "preact",
    "stride_on", "stride_block", "shortcut", "groups", "width_per_group", "se_ratio",
    "zero_init_residual", "use_bias", "bn_epsilon", "bn_momentum", "kernel_initializer",
    "weight_decay", "name_prefix", "head", "dropout", "fc_units", "outputs")


def check_options(options, allowed, where):
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)} for {where}; its options "
                        f"are {', '.join(allowed)}.")


def applications_call(depth, include_top=True, weights=None, input_tensor=None,
                      input_shape=None, pooling=None, classes=1000,
                      classifier_activation="softmax", name=None, default_size=DEFAULT_SIZE,
                      **options):
    """keras.applications' argument conventions on top of :func:`create_resnet`.

    ``input_shape`` follows the image data format; without it the input is
    ``default_size`` square with a head and ``(None, None, 3)`` without one.
    """
    validation.boolean("include_top", include_top)
    classes = validation.positive_int("classes", classes)  # named as the caller knows it
    options.setdefault("head", "fc")
    min_size = plan(depth, **{k: v for k, v in options.items() if k in _PLAN_OPTIONS}).min_size
    data_format = keras.config.image_data_format()
    if input_shape is None:
        size = default_size if include_top and input_tensor is None else None
        in_shape = (size, size, 3)
    else:
        in_shape = validation.spatial_shape("input_shape", input_shape, min_size, data_format)
    if input_tensor is not None and input_shape is not None:
        given = validation.input_tensor(input_tensor).shape[1:]
        expected = (in_shape[2], *in_shape[:2]) if data_format == "channels_first" else in_shape
        if tuple(given) != tuple(expected):
            raise ValueError(f"`input_shape` {tuple(input_shape)} does not match the shape "
                             f"of `input_tensor` {tuple(given)}; pass one of them.")
    return create_resnet(in_shape, classes, depth, include_top=include_top, pooling=pooling,
                         classifier_activation=classifier_activation, weights=weights,
                         input_tensor=input_tensor, name=name, **options)


#: Keyword options of ``plan`` beyond its named arguments: the block style.
STYLE_OPTIONS = ("preact", "stride_on", "shortcut", "se_ratio", "zero_init_residual")

_PLAN_OPTIONS = ("blocks", "block_type", "widths", "stem", "stem_width", "stride_block",
                 "groups", "width_per_group", "preact", "stride_on", "shortcut", "se_ratio",
                 "zero_init_residual")

_SIGNATURE_DOC = """ResNet-{depth} with keras.applications' signature.

    The head is ``avg_pool`` + ``fc{{classes}}`` (``fc1000`` by default). ``input_shape``
    follows ``keras.config.image_data_format()``; without it the input is 224x224x3 with a
    head and ``(None, None, 3)`` without one. ``weights``: ``None`` or a path. Keyword
    options of :func:`create_resnet` pass through (``use_bias``, ``stride_on``, ...).

    >>> import kresnet
    >>> model = kresnet.ResNet{depth}(include_top=False, input_shape=(64, 64, 3), pooling="avg")
    >>> model.output_shape
    (None, {features})
    """


def _make_applications_function(depth):
    def resnet(include_top=True, weights=None, input_tensor=None, input_shape=None,
               pooling=None, classes=1000, classifier_activation="softmax", name=None,
               **options):
        check_options(options, APPLICATIONS_OPTIONS, f"ResNet{depth}")
        return applications_call(depth, include_top, weights, input_tensor, input_shape,
                                 pooling, classes, classifier_activation, name, **options)

    resnet.__name__ = resnet.__qualname__ = f"ResNet{depth}"
    resnet.__doc__ = _SIGNATURE_DOC.format(depth=depth, features=plan(depth).features)
    resnet.__module__ = __name__
    return resnet


ResNet18 = _make_applications_function(18)
ResNet34 = _make_applications_function(34)
ResNet50 = _make_applications_function(50)
ResNet101 = _make_applications_function(101)
ResNet152 = _make_applications_function(152)

"""``create_resnet`` and the keras.applications-style ``ResNet18`` ... ``ResNet152``.

A model is stem -> stages -> head. :func:`plan` turns a row of :data:`kresnet.depths.DEPTHS`
(or a custom stage list) into the list of blocks to build; every check runs before the
first layer is created.
"""

from dataclasses import dataclass

import keras

from kresnet import heads, naming, validation
from kresnet.blocks import residual_block
from kresnet.depths import DEPTHS, FIRST_STAGE, depth_of, stage_filters
from kresnet.options import BN_EPSILON, BN_MOMENTUM, KERNEL_INITIALIZER, Options
from kresnet.stems import CLASSIC_STRIDE, classic_stem

STEM_FILTERS = 64
DEFAULT_SIZE = 224


@dataclass(frozen=True)
class BlockPlan:
    """One block to build: where it sits, its filters, stride and shortcut."""

    stage: int
    label: str
    filters: tuple
    strides: int
    projection: bool

    def names(self, prefix=""):
        return naming.BlockNames(self.stage, self.label, prefix)


@dataclass(frozen=True)
class Plan:
    depth: int
    block_type: str
    blocks: tuple
    stages: tuple  # one tuple of BlockPlan per stage

    @property
    def min_size(self):
        """Total downsampling: the smallest input height/width the network accepts."""
        return CLASSIC_STRIDE * 2 ** (len(self.blocks) - 1)


def plan(depth=50, blocks=None, block_type=None):
    """Resolve a depth (and optional custom stage list / block type) into blocks to build.

    ``depth`` picks a row of the table; ``blocks`` and ``block_type`` override its entries.
    The first block of every stage after the first halves the size; a block gets a
    projection shortcut where its input and output shapes differ.

    >>> p = plan(101)
    >>> p.block_type, p.blocks, [b.label for b in p.stages[1]]
    ('bottleneck', (3, 4, 23, 3), ['a', 'b1', 'b2', 'b3'])
    >>> plan(18, blocks=(1, 1)).depth
    6
    """
    row = DEPTHS[validation.depth(depth)]
    block_type = row.block_type if block_type is None else validation.block_type(block_type)
    custom = blocks is not None
    blocks = validation.blocks(blocks) if custom else row.blocks
    channels = STEM_FILTERS
    stages = []
    for stage, n_blocks in enumerate(blocks, start=FIRST_STAGE):
        numbered = None if custom else (stage in row.numbered_stages or None)
        filters = stage_filters(stage, block_type)
        stage_plan = []
        for i, label in enumerate(naming.stage_labels(n_blocks, numbered)):
            strides = 2 if i == 0 and stage > FIRST_STAGE else 1
            stage_plan.append(BlockPlan(stage, label, filters, strides,
                                        projection=strides != 1 or channels != filters[-1]))
            channels = filters[-1]
        stages.append(tuple(stage_plan))
    return Plan(depth_of(blocks, block_type), block_type, blocks, tuple(stages))


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
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def create_resnet(in_shape=(DEFAULT_SIZE, DEFAULT_SIZE, 3), n_classes=10, depth=50, *,
                  blocks=None, block_type=None, middle_kernel_size=3, include_top=True,
                  head="tutorial", pooling=None, classifier_activation="softmax",
                  dropout=heads.TUTORIAL_DROPOUT, fc_units=heads.TUTORIAL_FC_UNITS,
                  weights=None, input_tensor=None, use_bias=True, bn_epsilon=BN_EPSILON,
                  bn_momentum=BN_MOMENTUM, kernel_initializer=KERNEL_INITIALIZER,
                  name_prefix="", name=None):
    """Build a ResNet as a Keras ``Model`` with Caffe-style layer names.

    With its defaults this is the tutorial's ResNet-50: the classic stem, stages 2-5 of
    [3, 4, 6, 3] bottleneck blocks, then ``avg_pool``, dropout 0.5, ``fc_01`` (Dense 200,
    relu), dropout 0.5 and ``fc_final`` (Dense ``n_classes``, softmax).

    Args:
        in_shape: ``(height, width, channels)``; height and width may be ``None``.
            Ignored when ``input_tensor`` is given.
        n_classes: classes of the classifier head.
        depth: 18, 34, 50, 101 or 152 (a row of :data:`kresnet.DEPTHS`).
        blocks, block_type: override the row's blocks per stage / ``"basic"`` or
            ``"bottleneck"``.
        middle_kernel_size: kernel of the middle conv of every block.
        include_top, head: ``head`` is ``"tutorial"``, ``"fc"`` (``avg_pool`` + ``fc{n}``) or
            ``None``; ``include_top=False`` also means no head.
        pooling: without a head, ``None`` (4D output), ``"avg"`` or ``"max"``.
        weights: ``None`` or the path of a weights file to load.
        use_bias, bn_epsilon, bn_momentum, kernel_initializer: layer settings.
        name_prefix: prepended to every layer name (two ResNets in one graph).

    >>> model = create_resnet((64, 64, 3), 10, depth=18)
    >>> model.name, model.output_shape, model.layers[1].name
    ('resnet18', (None, 10), 'conv1_pad')
    """
    model_plan = plan(depth, blocks, block_type)
    kernel_size = validation.kernel_size(middle_kernel_size)
    n_classes = validation.positive_int("n_classes", n_classes)
    head = validation.head(head) if validation.boolean("include_top", include_top) else None
    validation.pooling(pooling)
    validation.classifier_activation(classifier_activation)
    dropout = validation.number("dropout", dropout, 0, 1, high_open=True)
    fc_units = validation.positive_int("fc_units", fc_units)
    weights = validation.weights(weights)
    options = Options.checked(use_bias, bn_epsilon, bn_momentum, kernel_initializer, name_prefix)
    name = validation.model_name(name) or naming.model_name(model_plan.depth, name_prefix)
    x, inputs = _model_input(in_shape, input_tensor, model_plan, options, n_classes)

    x = classic_stem(x, options, STEM_FILTERS)
    for stage in model_plan.stages:
        for block in stage:
            x = residual_block(x, kernel_size, block.filters, block.names(options.name_prefix),
                               block.strides, block.projection, options)
    x = heads.build_head(x, head, n_classes, classifier_activation, pooling, options,
                         dropout, fc_units)

    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


#: Keyword options of ``create_resnet`` that the ``ResNet*`` functions pass through.
APPLICATIONS_OPTIONS = ("use_bias", "bn_epsilon", "bn_momentum", "kernel_initializer",
                        "name_prefix")


def _applications_resnet(depth, include_top, weights, input_tensor, input_shape, pooling,
                         classes, classifier_activation, name, options):
    unknown = sorted(set(options) - set(APPLICATIONS_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)}; the options of "
                        f"ResNet{depth} are {', '.join(APPLICATIONS_OPTIONS)}.")
    validation.boolean("include_top", include_top)
    min_size = plan(depth).min_size
    data_format = keras.config.image_data_format()
    if input_shape is None:
        size = DEFAULT_SIZE if include_top and input_tensor is None else None
        in_shape = (size, size, 3)
    else:
        in_shape = validation.spatial_shape("input_shape", input_shape, min_size, data_format)
    if input_tensor is not None and input_shape is not None:
        given = validation.input_tensor(input_tensor).shape[1:]
        expected = (in_shape[2], *in_shape[:2]) if data_format == "channels_first" else in_shape
        if tuple(given) != tuple(expected):
            raise ValueError(f"`input_shape` {tuple(input_shape)} does not match the shape "
                             f"of `input_tensor` {tuple(given)}; pass one of them.")
    return create_resnet(in_shape, classes, depth, include_top=include_top, head="fc",
                         pooling=pooling, classifier_activation=classifier_activation,
                         weights=weights, input_tensor=input_tensor, name=name, **options)


_SIGNATURE_DOC = """ResNet-{depth} with keras.applications' signature.

    The head is ``avg_pool`` + ``fc{{classes}}`` (``fc1000`` by default).

    ``input_shape`` follows ``keras.config.image_data_format()``; without it the input is
    224x224x3 with a head and ``(None, None, 3)`` without one. ``weights``: ``None`` or a path.
    Keyword options of :func:`create_resnet` (``use_bias``, ``bn_epsilon``, ``bn_momentum``,
    ``kernel_initializer``, ``name_prefix``) pass through.

    >>> import kresnet
    >>> model = kresnet.ResNet{depth}(include_top=False, input_shape=(64, 64, 3), pooling="avg")
    >>> model.output_shape
    (None, {features})
    """


def _make_applications_function(depth):
    features = stage_filters(FIRST_STAGE + 3, DEPTHS[depth].block_type)[-1]

    def resnet(include_top=True, weights=None, input_tensor=None, input_shape=None,
               pooling=None, classes=1000, classifier_activation="softmax", name=None,
               **options):
        return _applications_resnet(depth, include_top, weights, input_tensor, input_shape,
                                    pooling, classes, classifier_activation, name, options)

    resnet.__name__ = resnet.__qualname__ = f"ResNet{depth}"
    resnet.__doc__ = _SIGNATURE_DOC.format(depth=depth, features=features)
    resnet.__module__ = __name__
    return resnet


ResNet18 = _make_applications_function(18)
ResNet34 = _make_applications_function(34)
ResNet50 = _make_applications_function(50)
ResNet101 = _make_applications_function(101)
ResNet152 = _make_applications_function(152)

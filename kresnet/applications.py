"""keras.applications' side: ``ResNet18`` ... ``ResNet152`` with its signature, and
conversions of whole models to and from ``keras.applications.ResNet50`` and friends.

keras.applications names a layer ``conv4_block23_3_conv`` where kresnet names it
``res4b22_branch2c``; :func:`kresnet.naming.keras_applications_names` holds the mapping and
:mod:`kresnet.weights` moves the weights by it.
"""

from typing import Optional

import keras

from kresnet import inspection, naming, validation
from kresnet.builder import build_undrawn
from kresnet.config import ResNetConfig
from kresnet.depths import DEPTHS
from kresnet.models import applications_config, make
from kresnet.weights import keras_applications_arguments, keras_mapping, transfer_weights

#: keras.applications functions by (depth, pre-activation).
KERAS_APPLICATIONS = {(50, False): "ResNet50", (101, False): "ResNet101",
                      (152, False): "ResNet152", (50, True): "ResNet50V2",
                      (101, True): "ResNet101V2", (152, True): "ResNet152V2"}
_V2 = {"preact": True, "stride_block": "last", "stride_on": "3x3"}

_SIGNATURE_DOC = """ResNet-{depth} with keras.applications' signature.

    The head is ``avg_pool`` + ``fc{{classes}}`` (``fc1000`` by default). ``input_shape``
    follows ``keras.config.image_data_format()``; without it the input is 224x224x3 with a
    head and ``(None, None, 3)`` without one. ``weights``: ``None``, ``"imagenet"`` (50, 101
    and 152) or a path. Keyword options of :class:`kresnet.ResNetConfig` pass through
    (``use_bias``, ``stride_on``, ...).

    >>> import kresnet
    >>> model = kresnet.ResNet{depth}(include_top=False, input_shape=(64, 64, 3), pooling="avg")
    >>> model.output_shape
    (None, {features})
    """


def _make_applications_function(depth):
    base = ResNetConfig(depth=depth, head="fc", classes=1000)

    def resnet(include_top: bool = True, weights: Optional[str] = None,
               input_tensor: Optional[keras.KerasTensor] = None, input_shape=None,
               pooling: Optional[str] = None, classes: int = 1000,
               classifier_activation="softmax", name: Optional[str] = None,
               **options) -> keras.Model:
        weights = validation.weights(weights)
        config = applications_config(
            base, include_top=include_top, input_tensor=input_tensor, input_shape=input_shape,
            pooling=pooling, classes=classes, classifier_activation=classifier_activation,
            name=name, options=options, where=f"ResNet{depth}", natural=base.input_shape[0])
        return make(config, input_tensor, weights)

    resnet.__name__ = resnet.__qualname__ = f"ResNet{depth}"
    resnet.__doc__ = _SIGNATURE_DOC.format(depth=depth, features=base.plan.features)
    resnet.__module__ = __name__
    return resnet


ResNet18 = _make_applications_function(18)
ResNet34 = _make_applications_function(34)
ResNet50 = _make_applications_function(50)
ResNet101 = _make_applications_function(101)
ResNet152 = _make_applications_function(152)


def _keras_config(model):
    """(depth, preact, top, classes, pooling, activation) of a keras.applications ResNet."""
    names = {layer.name for layer in model.layers}
    blocks = naming.keras_applications_blocks(names)
    depth = next((d for d, row in DEPTHS.items()
                  if row.blocks == blocks and row.block_type == "bottleneck"), None)
    preact = naming.KERAS_POST_BN in names
    if (depth, preact) not in KERAS_APPLICATIONS:
        raise ValueError(f"Model {model.name!r} is not a keras.applications ResNet50/101/152 "
                         f"or ResNet50V2/101V2/152V2 (blocks per stage {blocks}).")
    top = naming.KERAS_PREDICTIONS in names
    head = model.get_layer(naming.KERAS_PREDICTIONS) if top else None
    pooling = naming.pooling_of(names)
    return depth, preact, top, head.units if top else 1000, pooling, \
        head.activation if top else "softmax"


def _twin_config(depth, preact, **arguments):
    base = ResNetConfig(depth=depth, head="fc", classes=1000, use_bias=True,
                        **(_V2 if preact else {}))
    bn_momentum = arguments.pop("bn_momentum", base.bn_momentum)
    return applications_config(base.replace(bn_momentum=bn_momentum), natural=224,
                               where="from_keras_applications", **arguments)


def _kresnet_twin(depth, preact, **arguments):
    """The kresnet model of a keras.applications configuration, with random weights."""
    return make(_twin_config(depth, preact, **arguments))


def _undrawn_twin(depth, preact, **arguments):
    """``_kresnet_twin``, for weights that replace all of its own (builder.build_undrawn)."""
    return build_undrawn(_twin_config(depth, preact, **arguments))


def from_keras_applications(model: keras.Model) -> keras.Model:
    """The kresnet model with the same configuration as a keras.applications ResNet (v1 or
    v2, with or without its head), holding its weights.

    >>> import keras
    >>> reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> from_keras_applications(reference).get_layer("res4f_branch2c").filters
    1024
    """
    validation.keras_model(model)
    depth, preact, top, classes, pooling, activation = _keras_config(model)
    ours = _undrawn_twin(depth, preact, include_top=top, classes=classes, pooling=pooling,
                         classifier_activation=activation,
                         input_shape=tuple(model.input_shape[1:]),
                         bn_momentum=model.get_layer(
                             naming.keras_applications_names([["a"]])[
                                 naming.BlockNames(2, "a").bn("2a")]).momentum)
    transfer_weights(model, ours, keras_mapping(ours))
    return ours


def to_keras_applications(model: keras.Model, *, prefix: Optional[str] = None) -> keras.Model:
    """The keras.applications ResNet of the same configuration as a kresnet model, holding
    its weights. Refuses, naming the first layer that differs, a model keras.applications
    cannot express (torchvision's stride placement, ResNeXt, SE, other stems...).
    ``prefix`` picks one ResNet of a model that holds several.

    >>> import kresnet
    >>> to_keras_applications(kresnet.ResNet50(input_shape=(64, 64, 3))).name
    'resnet50'
    """
    prefix = inspection.find_prefix(model, prefix, "to_keras_applications")
    labels = inspection.stage_labels(model, prefix)
    blocks = tuple(len(stage) for stage in labels)
    preact = any(name.role == "preact_bn" for _, name in inspection.parsed(model, prefix))
    depth = next((d for d, row in DEPTHS.items()
                  if row.blocks == blocks and row.block_type == "bottleneck"), None)
    if (depth, preact) not in KERAS_APPLICATIONS:
        raise ValueError(f"Model {model.name!r} has blocks per stage {blocks}"
                         f"{' (pre-activation)' if preact else ''}: keras.applications has "
                         "ResNet50/101/152 and ResNet50V2/101V2/152V2 only.")
    arguments = keras_applications_arguments(model, prefix)
    # The twin is only compared layer by layer, never run: zero kernels spare the he_normal
    # draws, about half the time of building it.
    twin = _kresnet_twin(depth, preact, **arguments,
                         options={"name_prefix": prefix, "kernel_initializer": "zeros"})
    _same_architecture(model, twin, prefix)
    reference = getattr(keras.applications, KERAS_APPLICATIONS[(depth, preact)])(
        weights=None, **arguments)
    inverse = {theirs: ours for ours, theirs in keras_mapping(model, prefix).items()}
    # Every layer of the reference is filled, and _same_architecture found no layer of this
    # ResNet that the reference lacks; other layers of the model are not this ResNet's.
    transfer_weights(model, reference, inverse, use_all=False)
    return reference


def _layout(layer):
    config = layer.get_config()
    return {key: config.get(key) for key in ("kernel_size", "strides", "groups", "filters",
                                             "padding", "pool_size", "units")}


def _same_architecture(model, twin, prefix):
    """Raise naming the first layer where the ResNet ``prefix`` of ``model`` differs from
    the expected ``twin`` (its input layer aside: a model may be built on another tensor)."""
    ours = {layer.name: layer for layer, _ in inspection.parsed(model, prefix)
            if not isinstance(layer, keras.layers.InputLayer)}
    expected = [layer for layer in twin.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in expected:
        other = ours.get(layer.name)
        if other is None or type(other) is not type(layer) or _layout(other) != _layout(layer):
            found = "missing" if other is None else f"{type(other).__name__} {_layout(other)}"
            raise ValueError(
                f"Model {model.name!r} differs from keras.applications' layout at layer "
                f"{layer.name!r}: expected {type(layer).__name__} {_layout(layer)}, found "
                f"{found}.")
    expected_names = {layer.name for layer in expected}
    extra = [name for name in ours if name not in expected_names]
    if extra:
        raise ValueError(f"Model {model.name!r} has layer {extra[0]!r}, which "
                         "keras.applications' layout does not have.")


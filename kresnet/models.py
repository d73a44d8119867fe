"""The front doors: :func:`create_resnet` and :func:`build` turn arguments into a
:class:`kresnet.ResNetConfig`, build it (:mod:`kresnet.builder`) and then load weights
(:mod:`kresnet.weights`). ``ResNet18`` ... ``ResNet152`` live in :mod:`kresnet.applications`.
"""

import os
from typing import Optional, Tuple, Union

import keras

from kresnet import downloads, registry, validation, weights as weight_files
from kresnet.builder import build_model, new_input, tensor_shape
from kresnet.config import FIELDS, ResNetConfig, keyword_signature, reject_unknown
from kresnet.presets import PRESETS

#: Options of ``create_resnet`` beyond its named arguments.
CREATE_OPTIONS = tuple(n for n in FIELDS if n not in ("input_shape", "classes", "depth"))
#: Options that the keras.applications-style functions take as keywords (``**options``).
APPLICATIONS_OPTIONS = tuple(n for n in FIELDS if n not in (
    "depth", "input_shape", "classes", "pooling", "classifier_activation", "name"))


def make(config: ResNetConfig, input_tensor=None, weights=None,
         preprocessing: Union[None, str, registry.Weights] = None) -> keras.Model:
    """Build ``config`` and load ``weights`` (``None``, ``"imagenet"``, a checked path or a
    torch entry of :data:`kresnet.WEIGHTS`); ``preprocessing`` (an entry, or a mode) puts
    its preprocessing layers in front of the network."""
    if weights == "imagenet":
        weight_files.check_imagenet(config)  # before anything is built or downloaded
    if isinstance(weights, registry.Weights):
        downloads.convert(weights)  # a failed download or conversion builds nothing
    if preprocessing is not None:
        from kresnet.preprocessing import preprocessing_layers  # noqa: PLC0415

        if input_tensor is None:
            input_tensor = new_input(config)
        mode, mean, std = ((preprocessing, None, None) if isinstance(preprocessing, str)
                           else (preprocessing.mode, preprocessing.mean, preprocessing.std))
        input_tensor = preprocessing_layers(input_tensor, mode, mean, std, config.name_prefix)
    model = build_model(config, input_tensor)
    if isinstance(weights, registry.Weights):
        downloads.load_into(model, weights, config.name_prefix)
        return model
    if weights == "imagenet":
        weights = weight_files.imagenet_file(config)
    if weights is not None:
        weight_files.load_weights(model, weights)
    return model


#: The options that make a network what published weights were trained as; the others
#: (input size, head or none, pooling, initializers, regularisation, names) are free.
NETWORK_FIELDS = ("depth", "blocks", "block_type", "widths", "middle_kernel_size", "stem",
                  "stem_width", "stem_pool", "stride_block", "width_per_group", "preact",
                  "stride_on", "shortcut", "groups", "se_ratio", "use_bias", "bn_epsilon")


def _named_weights(name, weights):
    """The :data:`kresnet.WEIGHTS` entry that ``weights`` names for ``build(name)``, or
    None where ``weights`` is None, ``"imagenet"`` or a path."""
    if not isinstance(weights, str) or weights == "imagenet" or os.path.isfile(weights):
        return None
    is_name = weights in registry.WEIGHTS or not (
        os.sep in weights or weights.endswith((".h5", ".hdf5", ".keras", ".pth", ".pt",
                                                ".safetensors", ".npz")))
    if not is_name:
        return None
    if not isinstance(name, str):
        raise ValueError(f"`weights`={weights!r} names published weights, which need a preset "
                         "name: build('resnet50_v1_5', weights='tv2_in1k') or "
                         "kresnet.pretrained('resnet50.tv2_in1k').")
    return registry.for_preset(name, weights)


def _check_network(config, entry):
    """The built network must be the one the weights were trained as (their shapes could fit
    another one, say a stride moved): name the first option that departs."""
    wanted = entry.network
    for field in NETWORK_FIELDS:
        if getattr(config, field) != getattr(wanted, field):
            raise ValueError(f"`{field}`={getattr(config, field)!r} does not fit the weights "
                             f"{entry.name!r}, which need {field}={getattr(wanted, field)!r}.")
    if config.head not in (None, "fc") or (config.head and config.classes != 1000):
        raise ValueError(f"The weights {entry.name!r} come with a 1000-class 'fc' head: pass "
                         "include_top=False for a model without it (then add your own head), "
                         f"or classes=1000. Received: classes={config.classes!r}")


def _head(head, include_top):
    """The head option, checked even where ``include_top=False`` drops it."""
    head = FIELDS["head"].metadata["check"](head, "head")
    return head if validation.boolean("include_top", include_top) else None


def create_resnet(in_shape: Tuple[Optional[int], Optional[int], int] = (224, 224, 3),
                  n_classes: int = 10, depth: int = 50, *, include_top: bool = True,
                  weights: Optional[str] = None,
                  input_tensor: Optional[keras.KerasTensor] = None,
                  **options) -> keras.Model:
    """Build a ResNet as a Keras ``Model`` with Caffe-style layer names.

    With its defaults this is the tutorial's ResNet-50: the classic stem, stages 2-5 of
    [3, 4, 6, 3] bottleneck blocks, then ``avg_pool``, dropout 0.5, ``fc_01`` (Dense 200,
    relu), dropout 0.5 and ``fc_final`` (Dense ``n_classes``, softmax).

    Args:
        in_shape: ``(height, width, channels)``; height and width may be ``None``.
            Ignored when ``input_tensor`` is given.
        n_classes: classes of the classifier head.
        depth: 18, 34, 50, 101, 152 or 200 (a row of :data:`kresnet.DEPTHS`).
        include_top: ``False`` leaves the head out (``pooling`` then applies).
        weights: ``None``, ``"imagenet"`` (keras.applications' weights, for the same
            configurations) or the path of a weights file, read by layer name with
            :func:`kresnet.load_weights`.
        input_tensor: build on this Keras tensor instead of a new input.
        options: every other option of :class:`kresnet.ResNetConfig` (``blocks``,
            ``stride_on``, ``head``, ``use_bias``, ``name_prefix``, ...), each declared
            there once with its default, allowed values and meaning.

    >>> model = create_resnet((64, 64, 3), 10, depth=18)
    >>> model.name, model.output_shape, model.layers[1].name
    ('resnet18', (None, 10), 'conv1_pad')
    """
    reject_unknown(options, CREATE_OPTIONS, "create_resnet")
    options["head"] = _head(options.get("head", FIELDS["head"].default), include_top)
    weights = validation.weights(weights)
    names = {"input_shape": "in_shape", "classes": "n_classes"}
    if input_tensor is not None:
        in_shape = tensor_shape(input_tensor, keras.config.image_data_format())
        names["input_shape"] = "input_tensor.shape[1:]"
    config = ResNetConfig(input_shape=in_shape, classes=n_classes, depth=depth,
                          argument_names=names, **options)
    return make(config, input_tensor, weights)


create_resnet.__signature__ = keyword_signature(create_resnet, CREATE_OPTIONS)


def applications_config(base: ResNetConfig, *, include_top=True, input_tensor=None,
                        input_shape=None, pooling=None, classes=None,
                        classifier_activation="softmax", name=None, options=None,
                        where="build", natural=None) -> ResNetConfig:
    """keras.applications' argument conventions applied to ``base``.

    ``input_shape`` follows the image data format; without it (and without an
    ``input_tensor``) the input is ``natural`` (the preset's size) with a head and
    ``(None, None, 3)`` without one, or ``base``'s own where ``natural`` is None.
    ``options`` override ``base``'s; ``include_top=False`` drops the head.
    """
    options = dict(options or {})
    reject_unknown(options, APPLICATIONS_OPTIONS, where)
    options["head"] = _head(options.get("head", base.head), include_top)
    changes = dict(options, pooling=pooling, classifier_activation=classifier_activation)
    if classes is not None:
        changes["classes"] = validation.positive_int("classes", classes)
    if name is not None:
        changes["name"] = validation.model_name(name)
    data_format = keras.config.image_data_format()
    names = {}
    if input_shape is not None:
        changes["input_shape"] = validation.spatial_shape("input_shape", input_shape, None,
                                                          data_format)
    if input_tensor is not None:
        shape = tensor_shape(input_tensor, data_format)
        if input_shape is not None and changes["input_shape"] != shape:
            given = tuple(input_tensor.shape[1:])
            raise ValueError(f"`input_shape` {tuple(input_shape)} does not match the shape "
                             f"of `input_tensor` {given}; pass one of them.")
        changes["input_shape"], names["input_shape"] = shape, "input_tensor.shape[1:]"
    elif input_shape is None and natural is not None:
        size = natural if include_top else None
        changes["input_shape"] = (size, size, 3)
    return base.replace(argument_names=names, **changes)


def build(name: Union[str, ResNetConfig], input_shape=None, classes: Optional[int] = None,
          include_top: bool = True, weights: Optional[str] = None,
          input_tensor: Optional[keras.KerasTensor] = None, pooling: Optional[str] = None,
          classifier_activation="softmax", include_preprocessing: Union[bool, str] = False,
          **options) -> keras.Model:
    """Build a preset (a name of :data:`kresnet.PRESETS`) or a :class:`kresnet.ResNetConfig`
    with keras.applications' arguments; ``options`` override it.

    For a preset, ``classes`` defaults to the preset's (1000, or 10 for the CIFAR nets) and
    the input to its natural size (224x224x3, or 32x32x3). A config is built as it is,
    except for the arguments given here (``include_top=False`` drops its head, and
    ``pooling``, ``classifier_activation`` replace its own when they are not the
    defaults), so ``build(kresnet.config_of(model))`` rebuilds ``model``.

    ``weights``: ``None``, ``"imagenet"``, the path of a weights file, or published weights
    of :data:`kresnet.WEIGHTS` by full name or by tag (``build("resnet50_v1_5",
    weights="tv2_in1k")``): downloaded, checked and converted once, then read from the
    cache; the options that make the network (BN epsilon 1e-5, no conv bias) follow them,
    and any that departs is an error. ``include_preprocessing=True`` puts the weights'
    preprocessing in front as built-in layers (then the model takes 0-255 RGB images); a
    mode (``"caffe"``, ``"torch"``, ``"tf"``) does so without named weights.

    >>> import kresnet
    >>> model = kresnet.build("resnet20")
    >>> model.name, model.input_shape, model.output_shape
    ('resnet20', (None, 32, 32, 3), (None, 10))
    >>> kresnet.build(kresnet.config_of(model)).count_params() == model.count_params()
    True
    """
    return _build(name, _named_weights(name, weights), weights, input_shape, classes,
                  include_top, input_tensor, pooling, classifier_activation,
                  include_preprocessing, options)


def _preprocessing(include_preprocessing, entry, weights, config):
    """What ``include_preprocessing`` puts in front: None, a mode or the weights' entry."""
    from kresnet.preprocessing import MODES  # noqa: PLC0415

    if include_preprocessing is False:
        return None
    if include_preprocessing is True:
        if entry is None and weights != "imagenet":
            raise ValueError("`include_preprocessing`=True takes the preprocessing of named "
                             "weights (`weights`='tv2_in1k', 'imagenet', ...); without them "
                             "pass a mode: 'caffe', 'torch' or 'tf'.")
        return entry or ("tf" if config.preact else "caffe")
    allowed = ", ".join(repr(v) for v in (True, False, *MODES))
    if not isinstance(include_preprocessing, str):
        raise TypeError(f"`include_preprocessing` must be one of {allowed}. "
                        f"Received: include_preprocessing={include_preprocessing!r}")
    if include_preprocessing not in MODES:
        raise ValueError(f"`include_preprocessing` must be one of {allowed}. "
                         f"Received: include_preprocessing={include_preprocessing!r}")
    return include_preprocessing


def _build(name, entry, weights, input_shape, classes, include_top, input_tensor, pooling,
           classifier_activation, include_preprocessing, options):
    if entry is not None:
        options = {**entry.options, **options}
    config = build_config(name, input_shape=input_shape, classes=classes,
                          include_top=include_top, input_tensor=input_tensor, pooling=pooling,
                          classifier_activation=classifier_activation, **options)
    preprocessing = _preprocessing(include_preprocessing, entry, weights, config)
    if preprocessing is not None and config.input_shape[2] != 3:
        raise ValueError("`include_preprocessing` normalises RGB images, so the input must "
                         "have 3 channels; preprocess other images yourself. Received: "
                         f"(height, width, channels)={config.input_shape!r}")
    if entry is None:
        return make(config, input_tensor, validation.weights(weights), preprocessing)
    _check_network(config, entry)
    if entry.extra_options:  # a timm net beside its preset
        config = config.replace(name=config.name_prefix + entry.arch)
    return make(config, input_tensor, entry if entry.torch else "imagenet", preprocessing)


def build_config(name, input_shape=None, classes=None, include_top=True, input_tensor=None,
                 pooling=None, classifier_activation="softmax", **options) -> ResNetConfig:
    """The checked configuration that :func:`build` builds for the same arguments
    (``weights`` aside), without building it.

    >>> config = build_config("resnet50d", input_shape=(64, 64, 3), classes=7)
    >>> config.model_name, config.stem, config.classes
    ('resnet50d', 'deep', 7)
    """
    if isinstance(name, ResNetConfig):
        base, natural, where, model_name = name, None, "build(config)", None
        if pooling is None:
            pooling = base.pooling
        if classifier_activation == "softmax":
            classifier_activation = base.classifier_activation
    else:
        if not isinstance(name, str):
            raise TypeError("`name` must be a preset name (a string) or a "
                            f"kresnet.ResNetConfig. Received: name={name!r}")
        if name not in PRESETS:
            raise ValueError(f"`name` must be one of the presets: {', '.join(PRESETS)}. "
                             f"Received: name={name!r}")
        preset = PRESETS[name]
        base, natural, where = preset.config, preset.input_size, f"build({name!r})"
        model_name = validation.name_prefix(options.get("name_prefix", "")) + name
    return applications_config(base, include_top=include_top, input_tensor=input_tensor,
                               input_shape=input_shape, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation,
                               name=model_name, options=options, where=where,
                               natural=natural)


def pretrained(name: str, input_shape=None, include_top: bool = True,
               input_tensor: Optional[keras.KerasTensor] = None, pooling: Optional[str] = None,
               classifier_activation="softmax", include_preprocessing: Union[bool, str] = False,
               **options) -> keras.Model:
    """A model with published ImageNet weights, by name: ``"resnet50.tv2_in1k"``,
    ``"resnet50d.ra4_e3600_r224_in1k"``, ``"resnet50.keras_in1k"``, or an architecture
    alone for its default tag (``"resnet50d"`` is ``"resnet50d.ra2_in1k"``). Every name of
    :data:`kresnet.WEIGHTS` works, the timm nets that no preset is (``"resnet18d"``,
    ``"seresnext50_32x4d"``) among them; the arguments are :func:`build`'s. The file is
    downloaded, checked and converted once (see :mod:`kresnet.downloads`).

    >>> import kresnet
    >>> kresnet.WEIGHTS["resnet18d.ra2_in1k"].top1
    72.296
    >>> try:
    ...     pretrained("resnet18d.ra2_in1k", classes=10)  # refused before any download
    ... except ValueError as error:
    ...     print(str(error).split(":")[0])
    The weights 'resnet18d.ra2_in1k' come with a 1000-class 'fc' head
    """
    entry = registry.lookup(name)
    classes = options.pop("classes", None)
    return _build(entry.preset, entry, entry.name, input_shape, classes, include_top,
                  input_tensor, pooling, classifier_activation, include_preprocessing, options)

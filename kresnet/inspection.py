"""Reading a built (or loaded) model back: which ResNets it holds, their blocks and head,
and the :class:`kresnet.ResNetConfig` that builds it again (:func:`config_of`).

Every name is read through :func:`kresnet.naming.parse`; this module holds no name pattern.
"""

import math
from typing import Optional

import keras

from kresnet import naming, validation
from kresnet.config import FIELDS, BlockStyle, ResNetConfig
from kresnet.depths import BOTTLENECK_EXPANSION, DEPTHS


def find_prefix(model, prefix: Optional[str] = None, what: str = "This function") -> str:
    """The ``name_prefix`` of the ResNet in ``model``; with several, ``prefix`` picks one.

    ``ValueError`` for a model without a kresnet stem, for a ``prefix`` that names none of
    its ResNets, and for a model of several ResNets when ``prefix`` is None.

    >>> import kresnet
    >>> find_prefix(kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), name_prefix="x_"))
    'x_'
    """
    validation.keras_model(model)
    found = naming.prefixes(layer.name for layer in model.layers)
    if prefix is not None:
        validation.name_prefix(prefix, "prefix")
        if prefix not in found:
            raise ValueError(f"`prefix`={prefix!r} names no ResNet of model {model.name!r}; "
                             f"it has {_listing(found)}.")
        return prefix
    if not found:
        raise ValueError(f"Model {model.name!r} has no kresnet stem (conv1 or conv1a) followed "
                         f"by a block res2a: {what} reads kresnet's layer names.")
    if len(found) > 1:
        raise ValueError(f"Model {model.name!r} holds {len(found)} ResNets ({_listing(found)}); "
                         "pass `prefix=` to pick one.")
    return found[0]


def _listing(found):
    if not found:
        return "no kresnet stem"
    return "prefixes " + ", ".join(repr(p) for p in found)


def parsed(model, prefix: str):
    """``[(layer, naming.Name)]`` for every layer of the ResNet with ``prefix``."""
    result = []
    for layer in model.layers:
        name = naming.parse(layer.name, prefix)
        if name is not None:
            result.append((layer, name))
    return result


def stage_labels(model, prefix: str = ""):
    """Block labels per stage, read off the block sums ``res{stage}{label}``.

    >>> import kresnet
    >>> stage_labels(kresnet.ResNet101(include_top=False, input_shape=(64, 64, 3)))[1]
    ['a', 'b1', 'b2', 'b3']
    """
    stages = {}
    for layer, name in parsed(model, prefix):
        if name.role == "sum" and isinstance(layer, keras.layers.Add):
            stages.setdefault(name.stage, []).append(name.block)
    return [stages[s] for s in sorted(stages)]


def head_layer(model, prefix: str = ""):
    """The classifier's last Dense layer (``fc{classes}`` or ``fc_final``), or None."""
    for layer, name in parsed(model, prefix):
        if name.role in ("fc", "final") and isinstance(layer, keras.layers.Dense):
            return layer
    return None


def _initializer(conv):
    """The kernel initializer as the config names it: a name where it is a plain built-in."""
    initializer = conv.kernel_initializer
    default = keras.initializers.get(FIELDS["kernel_initializer"].default)
    same = type(initializer) is type(default) and \
        initializer.get_config() == default.get_config()
    return FIELDS["kernel_initializer"].default if same else initializer


def _activation(dense):
    activation = dense.get_config()["activation"]
    return None if activation == "linear" else activation


def config_of(model: keras.Model, *, prefix: Optional[str] = None) -> ResNetConfig:
    """The :class:`kresnet.ResNetConfig` of a kresnet model, read from its layers, so that
    ``kresnet.build(config_of(model))`` builds the same layers (names, classes, weight
    shapes). Works on loaded ``.keras`` files too; ``prefix`` picks one of several ResNets.

    >>> import kresnet
    >>> model = kresnet.build("resnext50_32x4d", input_shape=(64, 64, 3))
    >>> config = config_of(model)
    >>> config.groups, config.width_per_group, config.stride_on, config.input_shape
    (32, 4, '3x3', (64, 64, 3))
    """
    prefix = find_prefix(model, prefix, "config_of")
    found = parsed(model, prefix)
    get = {name_of(name): layer for layer, name in found}
    # With several ResNets the model's name is not this one's: it gets its default name.
    several = len(naming.prefixes(layer.name for layer in model.layers)) > 1
    values = {"name_prefix": prefix, "name": None if several else model.name}
    # Stem.
    deep = ("stem", "conv", "a") in get
    stem_convs = [get[("stem", "conv", p)] for p in (("a", "b", "c") if deep else (None,))]
    if deep:
        values["stem"] = "deep"
    elif ("stem", "pool", None) not in get:
        values["stem"] = "cifar"
    stem_pool = get.get(("stem", "pool", None))
    if isinstance(stem_pool, keras.layers.Conv2D):
        values["stem_pool"] = "conv"
    elif ("stem", "pool_stride", None) in get:
        values["stem_pool"] = "ignore"
    if ("stem", "aa_rows", None) in get or any(key[1] == "aa_rows" for key in get):
        values["anti_alias"] = "blur"
    elif isinstance(stem_pool, keras.layers.AveragePooling2D) or \
            ("stem", "aa", None) in get or any(key[1] == "aa" for key in get):
        values["anti_alias"] = "avg"
    values["stem_width"] = tuple(conv.filters for conv in stem_convs)
    first = stem_convs[0]
    pad = get.get(("stem", "pad", "a" if deep else None))
    values["input_shape"] = _input_shape(pad if pad is not None else first)
    # Blocks.
    labels = stage_labels(model, prefix)
    values["blocks"] = tuple(len(stage) for stage in labels)
    bottleneck = any(key[1] == "conv" and key[3] == "2c" for key in get if key[0] == "block")
    values["block_type"] = "bottleneck" if bottleneck else "basic"
    last = "2c" if bottleneck else "2b"
    blocks = [(stage, label) for stage, stage_labels_ in enumerate(labels, start=2)
              for label in stage_labels_]

    def conv(stage, label, branch):
        return get.get(("block", "conv", f"{stage}{label}", branch))

    values["widths"] = tuple(
        conv(stage, stage_labels_[0], last).filters // (BOTTLENECK_EXPANSION if bottleneck
                                                       else 1)
        for stage, stage_labels_ in enumerate(labels, start=2))
    middle = conv(*blocks[0], "2b" if bottleneck else "2a")
    values["middle_kernel_size"] = tuple(middle.kernel_size)
    if bottleneck:
        groups = middle.groups
        per_group = conv(*blocks[0], "2a").filters // groups
        values["groups"] = groups
        values["width_per_group"] = _width_per_group(per_group, values["widths"][0])
    values["preact"] = any(key[1] == "preact_bn" for key in get)
    strided = [(stage, label, branch) for stage, label in blocks for branch in ("2a", "2b")
               if conv(stage, label, branch) is not None and
               max(conv(stage, label, branch).strides) > 1]
    if bottleneck and any(branch == "2b" for _, _, branch in strided):
        values["stride_on"] = "3x3"
    if bottleneck and any(key[0] == "block" and key[1] in ("aa", "aa_rows") and
                          key[3] == "2b" for key in get):
        values["stride_on"] = "3x3"
    se = [(conv(*block, last).filters, get[("block", "se_squeeze", f"{block[0]}{block[1]}",
                                            None)].filters)
          for block in blocks if ("block", "se_squeeze", f"{block[0]}{block[1]}", None) in get]
    if se:
        # The widest block rounds least: its ratio, then the rounding all blocks agree on.
        values["se_ratio"] = se[-1][1] / se[-1][0]
        for divisor in (1, 8, 16, 4, 2):
            values["se_divisor"] = divisor
            if all(BlockStyle(se_ratio=values["se_ratio"], se_divisor=divisor)
                   .squeeze_width(c) == w for c, w in se):
                break
    values["eca"] = any(key[1] == "eca_conv" for key in get)
    rates = [float(layer.rate) for key, layer in get.items() if key[1] == "drop_path"]
    if rates:
        values["drop_path_rate"] = max(rates)
    if values.get("anti_alias") and bottleneck:
        values["stride_on"] = "3x3"  # the only layout anti-aliasing takes
    # Where the first stage keeps its size (stride_block="first"; keras' V2 strides in its
    # last block), a later stage that never strides dilates instead: output_stride.
    strides = [[_block_stride(get, conv, s, label) for label in stage_labels_]
               for s, stage_labels_ in enumerate(labels, start=2)]
    steps = [max(stage) for stage in strides]
    dilated = 0 if steps[0] > 1 else sum(1 for step in steps[1:] if step == 1)
    if dilated:
        stride = (4 if ("stem", "pool", None) in get else 1) * 2 ** (len(labels) - 1)
        values["output_stride"] = stride // 2 ** dilated
    final_bn = get.get(("block", "bn", f"{blocks[0][0]}{blocks[0][1]}", last))
    if final_bn is not None and type(final_bn.gamma_initializer).__name__ == "Zeros":
        values["zero_init_residual"] = True
    values["use_bias"] = bool(conv(*blocks[0], last).use_bias)
    bn = next((layer for layer, _ in found
               if isinstance(layer, keras.layers.BatchNormalization)), None)
    if bn is not None:
        values["bn_epsilon"], values["bn_momentum"] = float(bn.epsilon), float(bn.momentum)
    gn = next((layer for layer, _ in found
               if isinstance(layer, keras.layers.GroupNormalization)), None)
    if gn is not None:
        values["norm"], values["norm_groups"] = "group", int(gn.groups)
        values["bn_epsilon"] = float(gn.epsilon)
    values["kernel_initializer"] = _initializer(first)
    regularizer = first.kernel_regularizer
    if regularizer is not None:
        values["weight_decay"] = float(regularizer.get_config()["l2"]) * 2
    values.update(_head(model, get))
    # Which block of a stage strides, and the shortcut option, are read by comparing the
    # plan of each candidate with what the blocks hold.
    seen = [[(stride, _shortcut_kind(get, s, label))
             for label, stride in zip(stage_labels_, stage_strides)]
            for s, (stage_labels_, stage_strides) in enumerate(zip(labels, strides), start=2)]
    for shortcut in ("B", "A", "avg", "C"):
        for stride_block in ("first", "last"):
            # The row of these very blocks first, then rows of the same block kind.
            for depth in sorted(DEPTHS, key=lambda d: (DEPTHS[d].blocks != values["blocks"],
                                                       DEPTHS[d].block_type !=
                                                       values["block_type"])):
                try:
                    config = ResNetConfig(depth=depth, stride_block=stride_block,
                                          shortcut=shortcut, **values)
                except ValueError:
                    continue
                if config.plan.labels() == labels and _planned(config) == seen:
                    return config
    raise ValueError(f"Model {model.name!r} is not laid out as any kresnet config: its "
                     "blocks, strides, shortcuts or labels differ from every plan.")


def _planned(config):
    """Per block, its stride and the shortcut kind a reader of its layers sees."""
    def visible(block):
        if block.shortcut == "avg_projection" and block.strides == 1 and block.dilation == 1:
            return "projection"  # no pooling where nothing is downsampled
        return block.shortcut

    return [[(block.strides, visible(block)) for block in stage]
            for stage in config.plan.stages]


def _block_stride(get, conv, stage, label):
    """The stride of a block: its strided conv's, or its anti-aliasing's."""
    base = f"{stage}{label}"
    strides = [max(conv(stage, label, b).strides) for b in ("2a", "2b")
               if conv(stage, label, b) is not None]
    for branch in ("2a", "2b"):
        for role in ("aa", "aa_stride"):
            layer = get.get(("block", role, base, branch))
            if isinstance(layer, (keras.layers.AveragePooling2D, keras.layers.MaxPooling2D)):
                strides.append(max(layer.strides))
    return max(strides)


def _shortcut_kind(get, stage, label):
    base = f"{stage}{label}"
    projection = ("block", "conv", base, "1") in get
    pool = get.get(("block", "pool", base, "1"))
    if ("block", "zeros", base, "1") in get:
        return "zeros"
    if projection:
        return "avg_projection" if isinstance(pool, keras.layers.AveragePooling2D) \
            else "projection"
    return "subsample" if pool is not None else "identity"


def name_of(name):
    """A key for a parsed name: ``(part, role, block base or stem branch, branch)``."""
    if name.part == "block":
        return ("block", name.role, f"{name.stage}{name.block}", name.branch)
    return (name.part, name.role, name.branch) if name.part == "stem" else \
        (name.part, name.role, name.classes)


def _input_shape(first_conv):
    shape = tuple(first_conv.input.shape[1:])
    if first_conv.data_format == "channels_first":
        shape = (*shape[1:], shape[0])
    return shape


def _width_per_group(per_group, width):
    """The ``width_per_group`` whose ``int(width * wpg / 64)`` is ``per_group``."""
    wanted = per_group * 64 / width
    for candidate in (round(wanted), math.ceil(wanted), math.floor(wanted)):
        if candidate >= 1 and int(width * candidate / 64) == per_group:
            return candidate
    return max(1, round(wanted))


def _head(model, get):
    head = next((layer for key, layer in get.items() if key[:2] in
                 (("head", "fc"), ("head", "final"))), None)
    values = {}
    if head is None:
        values["head"] = None
        for pooling in ("catavgmax", "avgmax", "avg", "max"):
            if ("head", f"{pooling}_pool", None) in get:
                values["pooling"] = pooling
                break
        if isinstance(model.output, dict):
            values["outputs"] = "stages"
        return values
    values["classes"] = head.units
    values["classifier_activation"] = _activation(head)
    if ("head", "hidden", None) in get:
        values["head"] = "tutorial"
        values["fc_units"] = get[("head", "hidden", None)].units
        values["dropout"] = float(get[("head", "dropout_hidden", None)].rate)
    else:
        values["head"] = "fc"
    return values

"""torchvision's and timm's ResNets in kresnet models, and back: ``from_torch``, ``to_torch``.

The layout they share (which kresnet configuration each architecture is, which torch key
each weight is, the axis orders) is :mod:`kresnet.torch_layout`'s; this module reads a
source, detects its architecture, and builds the model.
"""

from typing import Dict, Mapping, Optional

import keras
import numpy as np

from kresnet import inspection, validation
from kresnet.builder import build_undrawn
from kresnet.models import build_config
from kresnet.torch_layout import (  # noqa: F401 - ARCHITECTURES, TORCH_OPTIONS: public here
    _D, _SE, ARCHITECTURES, TORCH_OPTIONS, fill, layout, module_names, state_arrays,
    torch_config, torch_shape)

def _signature(config):
    """What the keys and shapes of a state_dict tell of a configuration."""
    plan = config.plan
    return (config.preact, plan.block_type, plan.blocks, config.stem == "deep",
            config.shortcut == "avg", bool(config.se_ratio), config.groups,
            config.width_per_group, config.eca, config.stem_pool == "conv", config.norm,
            config.stem_width)


def detect(state: Mapping) -> str:
    """The name of the torchvision or timm architecture (a key of :data:`ARCHITECTURES`)
    whose state_dict has these keys and shapes: torch's ``layer{S}.{B}`` layout, or timm's
    pre-activation ``stages.{S}.blocks.{B}`` one.

    >>> import numpy as np
    >>> keys = {f"layer{s}.{b}.conv2.weight": np.zeros((64, 64, 3, 3))
    ...         for s, n in zip((1, 2, 3, 4), (2, 2, 2, 2)) for b in range(n)}
    >>> detect(keys)
    'resnet18'
    """
    preact = "stem.conv.weight" in state

    def stage_key(stage):  # the key prefix of stage 1 ... 4
        return f"stages.{stage - 1}.blocks." if preact else f"layer{stage}."

    def block(stage, index):
        return f"{stage_key(stage)}{index}."

    blocks = []
    for stage in (1, 2, 3, 4):
        head = stage_key(stage)
        found = {key[len(head):].split(".")[0] for key in state if key.startswith(head)}
        blocks.append(len(found))
    bottleneck = f"{block(1, 0)}conv3.weight" in state
    middle = state.get(f"{block(1, 0)}conv2.weight")
    if middle is None or 0 in blocks:
        raise ValueError("`source` is not a torchvision or timm ResNet: it has no "
                         f"{block(1, 0)}conv2.weight, or one of its four stages is missing")
    out_channels, in_per_group = np.shape(middle)[:2]
    groups = out_channels // in_per_group if bottleneck else 1
    found = (preact, "bottleneck" if bottleneck else "basic", tuple(blocks),
             "conv1.0.weight" in state, any(k.endswith(".downsample.2.weight") for k in state),
             f"{block(1, 0)}se.fc1.weight" in state, groups,
             out_channels // groups if bottleneck else 64,
             f"{block(1, 0)}se.conv.weight" in state, "maxpool.0.weight" in state,
             "group" if "bn1.weight" in state and "bn1.running_mean" not in state else "batch",
             tuple(int(np.shape(state[key])[0]) for key in
                   (("conv1.0.weight", "conv1.3.weight", "conv1.6.weight")
                    if "conv1.0.weight" in state else ("conv1.weight",)) if key in state)
             or (64,))
    for arch in ARCHITECTURES:
        if _signature(torch_config(arch)) == found:
            return arch
    raise ValueError(
        "`source` matches none of the architectures kresnet converts ("
        + ", ".join(ARCHITECTURES) + f"): it has {'pre-activation ' if preact else ''}"
        f"{found[1]} blocks {found[2]}, {'a deep' if found[3] else 'a classic'} stem, "
        f"{'average-pooled ' if found[4] else ''}projection shortcuts, "
        f"{'SE, ' if found[5] else ''}{groups} group(s)")


def from_torch(source, arch: Optional[str] = None, **options) -> keras.Model:
    """A kresnet model holding the weights of a torchvision or timm ResNet.

    ``source``: a state_dict (a dict of torch tensors or NumPy arrays), a torch module, a
    ``.pth``/``.pt`` file (read with ``torch.load(weights_only=True)``: nothing but tensors
    is unpickled) or a ``.safetensors`` file (read without torch). ``arch``: a key of
    :data:`ARCHITECTURES` (``"resnet50"``, ``"resnet50d"``, ``"seresnext50_32x4d"``), or
    ``None`` to read it off the keys and shapes. ``options``: :func:`kresnet.build`'s
    (``input_shape``, ``include_top``, ``pooling``, ``name_prefix``, ...). The model gives
    what the torch model gives in eval mode: logits, unless ``classifier_activation`` says
    otherwise; the classes follow ``fc``. Every key is used: a missing, extra or
    differently shaped key raises ``ValueError`` naming it and both shapes. An
    ``input_shape`` of 1, 2, 4 or more channels adapts RGB weights' first conv as timm
    does (``in_chans``): summed over R, G, B for one channel, else repeated and scaled by
    3 / channels.

    >>> import kresnet, numpy as np
    >>> ours = kresnet.build("resnet18", input_shape=(64, 64, 3), classes=10, **TORCH_OPTIONS)
    >>> state = kresnet.to_torch(ours)
    >>> state["layer1.0.conv1.weight"].shape, state["fc.weight"].shape
    ((64, 64, 3, 3), (10, 512))
    >>> model = kresnet.from_torch(state, input_shape=(64, 64, 3))
    >>> model.name, model.output_shape, model.get_layer("res2a_branch2a").name
    ('resnet18', (None, 10), 'res2a_branch2a')
    >>> tuple(kresnet.from_torch(state, input_shape=(64, 64, 1)).get_layer("conv1").kernel.shape)
    (7, 7, 1, 64)
    """
    if "weights" in options:
        raise ValueError("from_torch takes its weights from `source`; it has no `weights` "
                         f"option. Received: weights={options['weights']!r}")
    state = state_arrays(source)
    if arch is None:
        arch = detect(state)
    else:
        validation.one_of("arch", arch, tuple(ARCHITECTURES))
    include_top = options.get("include_top", True)
    preset, extra = ARCHITECTURES[arch]
    classifier = "head.fc.weight" if torch_config(arch).preact else "fc.weight"
    if include_top and classifier in state and "classes" not in options:
        options["classes"] = int(np.shape(state[classifier])[0])
    options.setdefault("classifier_activation", None)
    config = build_config(preset, **{**TORCH_OPTIONS, **extra, **options})
    # Every weight is set below (a missing key is an error): no random draws to overwrite.
    model = build_undrawn(config, options.get("input_tensor"))
    fill(model, state, arch, config, include_top)
    return model


def to_torch(model: keras.Model, *, prefix: Optional[str] = None) -> Dict[str, np.ndarray]:
    """The weights of a kresnet model as a torchvision/timm state_dict of NumPy arrays,
    which the torch model of the same architecture loads with
    ``load_state_dict({k: torch.from_numpy(v) for k, v in d.items()}, strict=True)``.

    The model must be one that torch's ResNets can express: post-activation blocks, the
    classic or deep stem, projection or average-pooled shortcuts, convs without bias, an
    ``fc`` head or none (``ValueError`` otherwise). ``prefix`` picks one of several
    ResNets, as in :func:`kresnet.config_of`. BN's ``num_batches_tracked`` is 0.

    >>> import kresnet
    >>> state = kresnet.to_torch(kresnet.build("resnet50d", input_shape=(64, 64, 3)))
    >>> state["conv1.6.weight"].shape, state["layer1.0.downsample.1.weight"].shape
    ((64, 32, 3, 3), (256, 64, 1, 1))
    """
    validation.keras_model(model)
    config = inspection.config_of(model, prefix=prefix)
    preact_layout = (config.stride_on, config.stride_block, config.stem_pool) == (
        "3x3", "first", "ignore") and config.stem == "classic" and config.shortcut == "B"
    problems = [(config.preact and not preact_layout,
                 "pre-activation blocks other than timm's ResNetV2 (stride on the 3x3 of the "
                 "first block, the classic stem with stem_pool='ignore', shortcut B)"),
                (config.use_bias, "convolutions with bias"),
                (config.stem not in ("classic", "deep"), f"the {config.stem!r} stem"),
                (config.shortcut not in ("B", "avg"), f"shortcut={config.shortcut!r}"),
                (config.head not in (None, "fc"), f"the {config.head!r} head"),
                (config.plan.block_type == "bottleneck" and config.stride_on != "3x3",
                 "the stride on the first 1x1 conv (torch's ResNets stride on the 3x3)")]
    for bad, what in problems:
        if bad:
            raise ValueError(f"model {model.name!r} has {what}, which torchvision's and "
                             "timm's ResNets do not")
    names = module_names(model, config, config.name_prefix)
    state = {}
    for layer in model.layers:
        if layer.name in names:
            for weight, (parameter, axes) in zip(layer.weights, layout(layer)):
                array = keras.ops.convert_to_numpy(weight)
                state[f"{names[layer.name]}.{parameter}"] = np.ascontiguousarray(torch_shape(
                    config, layer, array if axes is None else np.transpose(array, axes)))
            if isinstance(layer, keras.layers.BatchNormalization):
                state[f"{names[layer.name]}.num_batches_tracked"] = np.array(0, np.int64)
    return state

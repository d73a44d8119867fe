"""torchvision's and timm's ResNets in kresnet models, and back: ``from_torch``, ``to_torch``.

Both libraries lay a ResNet's state_dict out alike: ``conv1``/``bn1`` (or timm's deep stem
``conv1.0`` ... ``conv1.6``), ``layer{S}.{B}.conv{1,2,3}`` and ``bn{1,2,3}``, the projection
``downsample.0``/``.1`` (``.1``/``.2`` behind timm's average pooling), timm's
``se.fc1``/``se.fc2``, and ``fc``. kresnet's layer names map onto those keys through
``naming.torch_names``; this module moves the arrays (OIHW kernels to HWIO, Dense kernels
transposed) and knows which kresnet configuration each architecture is. Every
architecture here is "v1.5" (stride on the 3x3 conv), BN epsilon 1e-5, convs without bias.
"""

import os
from types import MappingProxyType
from typing import Dict, Mapping, Optional

import keras
import numpy as np

from kresnet import inspection, naming, safety, validation
from kresnet.builder import build_undrawn
from kresnet.models import build_config
from kresnet.presets import PRESETS

#: What every torchvision and timm ResNet shares: PyTorch's BatchNorm2d epsilon, convs
#: without bias, and logits out (a torch model has no softmax).
TORCH_OPTIONS = MappingProxyType({"bn_epsilon": 1e-5, "use_bias": False})
_D = {"stem": "deep", "shortcut": "avg"}
_SE = {"se_ratio": 1 / 16}

#: torchvision or timm model name -> (kresnet preset, the options it adds to the preset).
ARCHITECTURES = MappingProxyType({
    # torchvision.models
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50": ("resnet50_v1_5", {}),
    "resnet101": ("resnet101_v1_5", {}),
    "resnet152": ("resnet152_v1_5", {}),
    "resnext50_32x4d": ("resnext50_32x4d", {}),
    "resnext101_32x8d": ("resnext101_32x8d", {}),
    "resnext101_64x4d": ("resnext101_32x8d", {"groups": 64, "width_per_group": 4}),
    "wide_resnet50_2": ("wide_resnet50_2", {}),
    "wide_resnet101_2": ("wide_resnet101_2", {}),
    # timm: ResNet-D (deep stem, average-pooled shortcut), SE, ResNeXt-D
    "resnet18d": ("resnet18", _D),
    "resnet34d": ("resnet34", _D),
    "resnet50d": ("resnet50d", {}),
    "resnet101d": ("resnet101d", {}),
    "resnet152d": ("resnet152d", {}),
    "resnet200d": ("resnet200", {"stride_on": "3x3", **_D}),
    "seresnet50": ("seresnet50", {"stride_on": "3x3"}),
    "seresnet101": ("resnet101_v1_5", _SE),
    "seresnext50_32x4d": ("resnext50_32x4d", _SE),
    "resnext50d_32x4d": ("resnext50_32x4d", _D),
})

_BN = ("weight", "bias", "running_mean", "running_var")


def _config(arch, options):
    preset, extra = ARCHITECTURES[arch]
    return PRESETS[preset].config.replace(**TORCH_OPTIONS, **extra, **options)


def _arrays(source):
    """``source`` as a dict of NumPy arrays, ``num_batches_tracked`` left out."""
    if isinstance(source, (str, os.PathLike)):
        path = validation.path(source, "source")
        if not os.path.isfile(path):
            raise ValueError(f"`source` must be a state_dict, a torch module or an existing "
                             f".pth, .pt or .safetensors file; no file at {path!r}")
        state = (safety.read_safetensors(path) if path.endswith(".safetensors")
                 else safety.read_pth(path))
    elif hasattr(source, "state_dict") and callable(source.state_dict):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError("`source` must be a state_dict (a dict of tensors or arrays), a "
                        "torch module or the path of a .pth, .pt or .safetensors file. "
                        f"Received: source of type {type(source).__name__}")
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise TypeError(f"`source`'s keys must be strings. Received: {key!r}")
        if key.endswith("num_batches_tracked"):
            continue
        if hasattr(value, "detach"):  # a torch tensor, read without importing torch here
            value = value.detach().cpu().numpy()
        arrays[key] = np.asarray(value)
    return arrays


def _signature(config):
    """What the keys and shapes of a state_dict tell of a configuration."""
    plan = config.plan
    return (plan.block_type, plan.blocks, config.stem == "deep", config.shortcut == "avg",
            bool(config.se_ratio), config.groups, config.width_per_group)


def detect(state: Mapping) -> str:
    """The name of the torchvision or timm architecture (a key of :data:`ARCHITECTURES`)
    whose state_dict has these keys and shapes.

    >>> import numpy as np
    >>> keys = {f"layer{s}.{b}.conv2.weight": np.zeros((64, 64, 3, 3))
    ...         for s, n in zip((1, 2, 3, 4), (2, 2, 2, 2)) for b in range(n)}
    >>> detect(keys)
    'resnet18'
    """
    blocks = []
    for stage in (1, 2, 3, 4):
        found = {key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")}
        blocks.append(len(found))
    bottleneck = "layer1.0.conv3.weight" in state
    middle = state.get("layer1.0.conv2.weight")
    if middle is None or 0 in blocks:
        raise ValueError("`source` is not a torchvision or timm ResNet: it has no "
                         "layer1.0.conv2.weight, or a stage layer1 ... layer4 is missing")
    out_channels, in_per_group = np.shape(middle)[:2]
    groups = out_channels // in_per_group if bottleneck else 1
    found = ("bottleneck" if bottleneck else "basic", tuple(blocks),
             "conv1.0.weight" in state, any(k.endswith(".downsample.2.weight") for k in state),
             "layer1.0.se.fc1.weight" in state, groups,
             out_channels // groups if bottleneck else 64)
    for arch in ARCHITECTURES:
        if _signature(_config(arch, {})) == found:
            return arch
    raise ValueError(
        "`source` matches none of the architectures kresnet converts ("
        + ", ".join(ARCHITECTURES) + f"): it has {found[0]} blocks {found[1]}, "
        f"{'a deep' if found[2] else 'a classic'} stem, {'average-pooled ' if found[3] else ''}"
        f"projection shortcuts, {'SE, ' if found[4] else ''}{groups} group(s)")


def _layout(layer):
    """(torch parameter name, the permutation of the Keras weight's axes that gives torch's
    layout, or None) for each weight of ``layer``, in Keras' weight order: HWIO kernels are
    OIHW in torch, Dense kernels transposed."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(name, None) for name in _BN]
    if isinstance(layer, keras.layers.Conv2D):
        kernel = (3, 2, 0, 1)
    elif isinstance(layer, keras.layers.Dense):
        kernel = (1, 0)
    else:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no PyTorch "
                         "counterpart")
    return [("weight", kernel), ("bias", None)][:len(layer.weights)]


def _module_names(model, config, prefix=""):
    """Model layer name -> torch module name, for every layer of the ResNet ``prefix`` that
    holds weights (the layers of other ResNets and other names of the model are left out)."""
    mapping = naming.torch_names(config.plan.labels(), deep_stem=config.stem == "deep",
                                 avg_shortcut=config.shortcut == "avg",
                                 classes=config.classes if config.head else None,
                                 prefix=prefix)
    names = {}
    for layer in model.layers:
        if layer.weights and naming.parse(layer.name, prefix) is not None:
            if layer.name not in mapping:
                raise ValueError(f"layer {layer.name!r} of model {model.name!r} has no "
                                 "counterpart in torchvision's and timm's ResNets")
            names[layer.name] = mapping[layer.name]
    return names


def _adapt_input_channels(kernel, channels, key):
    """The first conv's OIHW ``kernel``, trained on RGB, for ``channels`` input channels,
    as timm adapts it (``in_chans``): one channel takes the sum over R, G and B (a grey
    image then gives what the RGB image of equal channels gave); more repeat R, G, B in turn
    and scale by 3 / ``channels``, so that the mean response stays. A kernel that already
    has ``channels`` is returned as it is."""
    given = np.shape(kernel)[1]
    if given == channels:
        return kernel
    if given != 3:
        raise ValueError(f"`source`'s {key!r} takes {given} input channels and the model "
                         f"{channels}: only RGB (3-channel) weights are adapted to other "
                         "channel counts")
    kernel = np.asarray(kernel, dtype="float32")
    if channels == 1:
        return kernel.sum(axis=1, keepdims=True)
    repeats = -(-channels // 3)
    return np.tile(kernel, (1, repeats, 1, 1))[:, :channels] * (3 / channels)


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
    state = _arrays(source)
    if arch is None:
        arch = detect(state)
    else:
        validation.one_of("arch", arch, tuple(ARCHITECTURES))
    include_top = options.get("include_top", True)
    preset, extra = ARCHITECTURES[arch]
    if include_top and "fc.weight" in state and "classes" not in options:
        options["classes"] = int(np.shape(state["fc.weight"])[0])
    options.setdefault("classifier_activation", None)
    config = build_config(preset, **TORCH_OPTIONS, **extra, **options)
    # Every weight is set below (a missing key is an error): no random draws to overwrite.
    model = build_undrawn(config, options.get("input_tensor"))
    names = _module_names(model, config, config.name_prefix)
    first = next(layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D) and layer.name in names)
    used = set()
    values = {}
    for layer in model.layers:
        if layer.name not in names:
            continue
        values[layer.name] = []
        for weight, (parameter, axes) in zip(layer.weights, _layout(layer)):
            key = f"{names[layer.name]}.{parameter}"
            shape = tuple(weight.shape) if axes is None else tuple(weight.shape[i] for i in axes)
            if key not in state:
                raise ValueError(f"`source` has no {key!r}: {arch} needs it with shape "
                                 f"{shape} (layer {layer.name!r})")
            if layer.name == first and parameter == "weight":
                state[key] = _adapt_input_channels(state[key], shape[1], key)
            if tuple(np.shape(state[key])) != shape:
                raise ValueError(f"`source`'s {key!r} has shape {tuple(np.shape(state[key]))}"
                                 f"; {arch} needs {shape} (layer {layer.name!r})")
            array = np.asarray(state[key], dtype=weight.dtype)
            values[layer.name].append(array if axes is None
                                      else np.transpose(array, np.argsort(axes)))
            used.add(key)
    unused = [key for key in state if key not in used
              and not (not include_top and key.split(".")[0] == "fc")]
    if unused:
        raise ValueError(f"`source` has {len(unused)} key(s) that {arch} does not use, the "
                         f"first {unused[0]!r} with shape {tuple(np.shape(state[unused[0]]))}")
    for layer in model.layers:
        if layer.name in values:
            layer.set_weights(values[layer.name])
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
    problems = [(config.preact, "pre-activation blocks"),
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
    names = _module_names(model, config, config.name_prefix)
    state = {}
    for layer in model.layers:
        if layer.name in names:
            for weight, (parameter, axes) in zip(layer.weights, _layout(layer)):
                array = keras.ops.convert_to_numpy(weight)
                state[f"{names[layer.name]}.{parameter}"] = np.ascontiguousarray(
                    array if axes is None else np.transpose(array, axes))
            if isinstance(layer, keras.layers.BatchNormalization):
                state[f"{names[layer.name]}.num_batches_tracked"] = np.array(0, np.int64)
    return state

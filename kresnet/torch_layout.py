"""torchvision's and timm's ResNet state_dict layout, below every front door: which kresnet
configuration each architecture is (:data:`ARCHITECTURES`), which torch key each kresnet
weight is, in which axis order, and the filling of a built model from a state_dict.

Both libraries lay a ResNet's state_dict out alike: ``conv1``/``bn1`` (or timm's deep stem
``conv1.0`` ... ``conv1.6``), ``layer{S}.{B}.conv{1,2,3}`` and ``bn{1,2,3}``, the projection
``downsample.0``/``.1`` (``.1``/``.2`` behind timm's average pooling), timm's
``se.fc1``/``se.fc2``, and ``fc``. kresnet's layer names map onto those keys through
``naming.torch_names``; OIHW kernels are HWIO in Keras and Dense kernels transposed. Every
architecture here is "v1.5" (stride on the 3x3 conv), BN epsilon 1e-5, convs without bias.
:mod:`kresnet.pytorch` (``from_torch``, ``to_torch``) and :mod:`kresnet.downloads` use it.
"""

import os
from types import MappingProxyType
from typing import Mapping

import keras
import numpy as np

from kresnet import naming, safety, validation
from kresnet.presets import PRESETS

#: What every torchvision and timm ResNet shares: PyTorch's BatchNorm2d epsilon, convs
#: without bias, and logits out (a torch model has no softmax).
TORCH_OPTIONS = MappingProxyType({"bn_epsilon": 1e-5, "use_bias": False})
_D = {"stem": "deep", "shortcut": "avg"}
_SE = {"se_ratio": 1 / 16}
#: timm's pre-activation ResNets: its stem's max pooling pads with cells that never win.
_V2 = {"stem_pool": "ignore"}

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
    "resnet18d": ("resnet18d", {}),
    "resnet34d": ("resnet34d", {}),
    "resnet50d": ("resnet50d", {}),
    "resnet101d": ("resnet101d", {}),
    "resnet152d": ("resnet152d", {}),
    "resnet200d": ("resnet200d", {}),
    "seresnet50": ("seresnet50", {"stride_on": "3x3"}),
    "seresnet18": ("seresnet18", {}),
    "seresnet101": ("seresnet101", {}),
    "seresnext50_32x4d": ("seresnext50_32x4d", {}),
    "resnext50d_32x4d": ("resnext50d_32x4d", {}),
    # timm's second tier: tiered stems, ECA, GroupNorm, ResNet-RS; the anti-aliased nets
    # have the state_dict of their plain peers (detect names those: pass `arch`).
    **{name: (name, {}) for name in (
        "resnet10t", "resnet14t", "resnet26", "resnet26d", "ecaresnet26t", "ecaresnet50d",
        "ecaresnet101d", "resnet50_gn", "resnetrs50", "resnetrs101", "resnetrs152",
        "resnetrs200", "resnetrs270", "resnetrs350", "resnetrs420", "resnetaa50",
        "resnetaa50d", "resnetblur50", "resnetblur50d")},
    # timm: pre-activation ResNets (He et al. 2016, stride on the 3x3 conv)
    "resnetv2_50": ("resnet50v2_paper", _V2),
    "resnetv2_101": ("resnet101v2_paper", _V2),
})

_BN = ("weight", "bias", "running_mean", "running_var")


def torch_config(arch, options=None):
    """The kresnet config of a torchvision or timm architecture, ``options`` applied.

    >>> torch_config("resnet50d").stem, torch_config("resnet50d").bn_epsilon
    ('deep', 1e-05)
    """
    preset, extra = ARCHITECTURES[arch]
    options = options or {}
    return PRESETS[preset].config.replace(**TORCH_OPTIONS, **extra, **options)


def state_arrays(source):
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


def torch_shape(config, layer, array):
    """``array`` (in torch's axis order) as torch stores it: timm's pre-activation nets keep
    their classifier as a 1x1 conv, whose kernel is the Dense kernel with two axes more."""
    if config.preact and isinstance(layer, keras.layers.Dense) and np.ndim(array) == 2:
        return np.reshape(array, (*np.shape(array), 1, 1))
    return array


def layout(layer):
    """(torch parameter name, the permutation of the Keras weight's axes that gives torch's
    layout, or None) for each weight of ``layer``, in Keras' weight order: HWIO kernels are
    OIHW in torch, Dense kernels transposed."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [(name, None) for name in _BN]
    if isinstance(layer, keras.layers.GroupNormalization):
        return [("weight", None), ("bias", None)]
    if isinstance(layer, keras.layers.Conv1D):  # ECA: (k, 1, 1) in Keras, (1, 1, k) in torch
        return [("weight", (2, 1, 0))]
    if isinstance(layer, keras.layers.Conv2D):
        kernel = (3, 2, 0, 1)
    elif isinstance(layer, keras.layers.Dense):
        kernel = (1, 0)
    else:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no PyTorch "
                         "counterpart")
    return [("weight", kernel), ("bias", None)][:len(layer.weights)]


def module_names(model, config, prefix=""):
    """Model layer name -> torch module name, for every layer of the ResNet ``prefix`` that
    holds weights (the layers of other ResNets and other names of the model are left out)."""
    classes = config.classes if config.head else None
    if config.preact:
        mapping = naming.timm_resnetv2_names(config.plan.labels(), classes, prefix)
    else:
        mapping = naming.torch_names(config.plan.labels(), deep_stem=config.stem == "deep",
                                     avg_shortcut=config.shortcut == "avg", classes=classes,
                                     prefix=prefix, anti_alias=config.anti_alias is not None)
    names = {}
    for layer in model.layers:
        parsed = naming.parse(layer.name, prefix)
        if layer.weights and parsed is not None and parsed.part != "preprocess":
            if layer.name not in mapping:
                raise ValueError(f"layer {layer.name!r} of model {model.name!r} has no "
                                 "counterpart in torchvision's and timm's ResNets")
            names[layer.name] = mapping[layer.name]
    return names


def adapt_input_channels(kernel, channels, key):
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


def fill(model, state, arch, config, include_top=True):
    """Set every weight of the ResNet of ``config`` in ``model`` from ``state`` (a dict of
    arrays under torch's keys, ``arch``'s layout); a missing, extra or differently shaped key
    raises ``ValueError`` naming it and both shapes, before any weight is set. The first
    conv's RGB kernel adapts to the model's channel count (:func:`adapt_input_channels`)."""
    names = module_names(model, config, config.name_prefix)
    first = next(layer.name for layer in model.layers
                 if isinstance(layer, keras.layers.Conv2D) and layer.name in names)
    used = set()
    values = {}
    for layer in model.layers:
        if layer.name not in names:
            continue
        values[layer.name] = []
        for weight, (parameter, axes) in zip(layer.weights, layout(layer)):
            key = f"{names[layer.name]}.{parameter}"
            shape = tuple(weight.shape) if axes is None else tuple(weight.shape[i] for i in axes)
            if key not in state:
                raise ValueError(f"`source` has no {key!r}: {arch} needs it with shape "
                                 f"{shape} (layer {layer.name!r})")
            if layer.name == first and parameter == "weight":
                state[key] = adapt_input_channels(state[key], shape[1], key)
            stored = np.shape(torch_shape(config, layer, np.empty(shape, "int8")))
            if stored != shape and tuple(np.shape(state[key])) == stored:
                state[key] = np.reshape(state[key], shape)  # timm's 1x1-conv classifier
            if tuple(np.shape(state[key])) != shape:
                raise ValueError(f"`source`'s {key!r} has shape {tuple(np.shape(state[key]))}"
                                 f"; {arch} needs {shape} (layer {layer.name!r})")
            array = np.asarray(state[key], dtype=weight.dtype)
            values[layer.name].append(array if axes is None
                                      else np.transpose(array, np.argsort(axes)))
            used.add(key)
    unused = [key for key in state if key not in used
              and not (not include_top and key.split(".")[0] in ("fc", "head"))]
    if unused:
        raise ValueError(f"`source` has {len(unused)} key(s) that {arch} does not use, the "
                         f"first {unused[0]!r} with shape {tuple(np.shape(state[unused[0]]))}")
    for layer in model.layers:
        if layer.name in values:
            layer.set_weights(values[layer.name])

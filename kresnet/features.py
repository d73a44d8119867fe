"""Multi-scale features (C2-C5) for detection and segmentation heads."""

import math

from keras import layers

from kresnet import naming


def stem_prefix(model):
    """The ``name_prefix`` the model was built with, read off its first conv; None for a
    model without a kresnet stem."""
    conv = next((layer for layer in model.layers if isinstance(layer, layers.Conv2D)), None)
    return None if conv is None else naming.prefix_of(conv.name)


def _stem_prefix(model):
    prefix = stem_prefix(model)
    if prefix is not None:
        return prefix
    raise ValueError(f"Model {model.name!r} has no kresnet stem (conv1 or conv1a): "
                     "feature_maps reads kresnet's layer names.")


def _block_outputs(model, prefix):
    """``(output_layer, stride)`` for every residual block ``{prefix}res...``, in order."""
    names = {layer.name for layer in model.layers}
    blocks = []
    for layer in model.layers:
        if not (isinstance(layer, layers.Add) and layer.name.startswith(f"{prefix}res")):
            continue
        # A post-activation block ends in ``res2a_relu``; a pre-activation one in the sum.
        out = model.get_layer(f"{layer.name}_relu") if f"{layer.name}_relu" in names else layer
        strided = [model.get_layer(n).strides for n in
                   (f"{layer.name}_branch2a", f"{layer.name}_branch2b") if n in names]
        blocks.append((out, max(max(s) for s in strided) if strided else 1))
    return blocks


def feature_maps(model):
    """The last output at each resolution: ``{"C2": ..., "C3": ..., "C4": ..., "C5": ...}``.

    ``C{k}`` is at stride ``2**k``: 4, 8, 16, 32 for the ImageNet stems (C0-C2 for the CIFAR
    stem, which does not downsample). Pre-activation nets give their normalised output
    (``post_relu``) as the last level. Any ``name_prefix`` is recognised.

    >>> import kresnet
    >>> maps = feature_maps(kresnet.create_resnet((64, 64, 3), 10, 18))
    >>> {k: tuple(v.shape) for k, v in maps.items()}["C5"]
    (None, 2, 2, 512)
    """
    prefix = _stem_prefix(model)
    names = {layer.name for layer in model.layers}
    stride = 4 if f"{prefix}pool1" in names else 1
    levels = {}
    for out, block_stride in _block_outputs(model, prefix):
        stride *= block_stride
        levels[f"C{int(math.log2(stride))}"] = out.output
    if f"{prefix}post_relu" in names:
        levels[f"C{int(math.log2(stride))}"] = model.get_layer(f"{prefix}post_relu").output
    return levels

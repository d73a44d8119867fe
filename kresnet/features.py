"""Multi-scale features (C2-C5) for detection and segmentation heads."""

import math
from typing import Dict, Optional

import keras
from keras import layers

from kresnet import inspection


def feature_maps(model: keras.Model, *, prefix: Optional[str] = None) -> Dict[str, object]:
    """The last output at each resolution: ``{"C2": ..., "C3": ..., "C4": ..., "C5": ...}``.

    ``C{k}`` is at stride ``2**k``: 4, 8, 16, 32 for the ImageNet stems (C0-C2 for the CIFAR
    stem, which does not downsample). Pre-activation nets give their normalised output
    (``post_relu``) as the last level. Any ``name_prefix`` is recognised; in a model that
    holds several ResNets, ``prefix`` picks one.

    >>> import kresnet
    >>> maps = feature_maps(kresnet.create_resnet((64, 64, 3), 10, 18))
    >>> {k: tuple(v.shape) for k, v in maps.items()}["C5"]
    (None, 2, 2, 512)
    """
    return {key: tensor for key, (tensor, _) in _levels(model, prefix).items()}


def feature_strides(model: keras.Model, *, prefix: Optional[str] = None) -> Dict[str, int]:
    """The stride of each level of :func:`feature_maps`: ``2**k`` for ``C{k}``, except in
    stages that dilate instead of striding (``output_stride``), which keep the stride of
    the level before them.

    >>> import kresnet
    >>> feature_strides(kresnet.create_resnet((64, 64, 3), 10, 18, head=None, output_stride=8))
    {'C2': 4, 'C3': 8, 'C4': 8, 'C5': 8}
    """
    return {key: stride for key, (_, stride) in _levels(model, prefix).items()}


def _levels(model, prefix):
    prefix = inspection.find_prefix(model, prefix, "feature_maps")
    found = inspection.parsed(model, prefix)
    roles = {(name.part, name.role, name.base, name.branch): layer for layer, name in found}
    stride = 4 if ("stem", "pool", None, None) in roles else 1
    level = int(math.log2(stride))
    stages = {}
    for layer, name in found:
        if name.role != "sum" or not isinstance(layer, layers.Add):
            continue
        # A post-activation block ends in ``res2a_relu``; a pre-activation one in the sum.
        out = roles.get(("block", "out", name.base, None), layer)
        strided = [max(roles[key].strides) for key in
                   [("block", role, name.base, branch) for branch in ("2a", "2b")
                    for role in ("conv", "aa", "aa_stride")] if key in roles
                   and isinstance(roles[key], (layers.Conv2D, layers.AveragePooling2D,
                                               layers.MaxPooling2D))]
        stages.setdefault(name.stage, []).append((out, max(strided) if strided else 1))
    levels = {}
    order = sorted(stages)
    # Where the first stage keeps its size (keras' V2 strides in its last block), a later
    # stage that never strides dilates instead (output_stride): it is the next level.
    first_keeps = bool(order) and all(step == 1 for _, step in stages[order[0]])
    for index, stage in enumerate(order):
        blocks = stages[stage]
        if index and first_keeps and all(step == 1 for _, step in blocks):
            level += 1
        for out, step in blocks:
            stride *= step
            if step > 1:
                level = int(math.log2(stride))
            levels[f"C{level}"] = (out.output, stride)
    post = roles.get(("post", "relu", None, None))
    if post is not None:
        levels[f"C{level}"] = (post.output, stride)
    return levels

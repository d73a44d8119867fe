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
    prefix = inspection.find_prefix(model, prefix, "feature_maps")
    found = inspection.parsed(model, prefix)
    roles = {(name.part, name.role, name.base, name.branch): layer for layer, name in found}
    stride = 4 if ("stem", "pool", None, None) in roles else 1
    levels = {}
    for layer, name in found:
        if name.role != "sum" or not isinstance(layer, layers.Add):
            continue
        # A post-activation block ends in ``res2a_relu``; a pre-activation one in the sum.
        out = roles.get(("block", "out", name.base, None), layer)
        strided = [roles[key].strides for key in (("block", "conv", name.base, "2a"),
                                                  ("block", "conv", name.base, "2b"))
                   if key in roles]
        stride *= max(max(s) for s in strided) if strided else 1
        levels[f"C{int(math.log2(stride))}"] = out.output
    post = roles.get(("post", "relu", None, None))
    if post is not None:
        levels[f"C{int(math.log2(stride))}"] = post.output
    return levels

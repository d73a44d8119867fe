"""kresnet: ResNets built with the Keras functional API, every layer named by stage and block.

>>> import kresnet
>>> model = kresnet.create_resnet((64, 64, 3), n_classes=10, depth=18)
>>> model.get_layer("res2a_branch2a").name
'res2a_branch2a'
"""

from kresnet.blocks import conv_block, identity_block
from kresnet.builder import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152, create_resnet, plan
from kresnet.depths import DEPTHS
from kresnet.features import feature_maps
from kresnet.interop import (
    from_keras_applications,
    load_weights,
    to_keras_applications,
    transfer_weights,
)
from kresnet.plotting import plot_model
from kresnet.presets import PRESETS, build
from kresnet.stems import do_first_conv

__version__ = "0.1.0"

__all__ = [
    "DEPTHS",
    "PRESETS",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "build",
    "conv_block",
    "create_resnet",
    "do_first_conv",
    "feature_maps",
    "from_keras_applications",
    "identity_block",
    "load_weights",
    "plan",
    "plot_model",
    "to_keras_applications",
    "transfer_weights",
]

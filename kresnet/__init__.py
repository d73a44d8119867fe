"""kresnet: ResNets built with the Keras functional API, every layer named by stage and block.

>>> import kresnet
>>> model = kresnet.create_resnet((64, 64, 3), n_classes=10, depth=18)
>>> model.get_layer("res2a_branch2a").name
'res2a_branch2a'

Public names are imported on first use, so that ``import kresnet`` (and the ``kresnet``
command's ``--help``) does not start TensorFlow before it is needed.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_PUBLIC = {
    "DEPTHS": "kresnet.depths",
    "PRESETS": "kresnet.presets",
    "ResNetConfig": "kresnet.config",
    "WEIGHTS": "kresnet.registry",
    "ResNet18": "kresnet.applications",
    "ResNet34": "kresnet.applications",
    "ResNet50": "kresnet.applications",
    "ResNet101": "kresnet.applications",
    "ResNet152": "kresnet.applications",
    "build": "kresnet.models",
    "config_of": "kresnet.inspection",
    "conv_block": "kresnet.blocks",
    "count_macs": "kresnet.analysis",
    "create_resnet": "kresnet.models",
    "describe": "kresnet.analysis",
    "do_first_conv": "kresnet.stems",
    "export": "kresnet.exporting",
    "feature_maps": "kresnet.features",
    "feature_strides": "kresnet.features",
    "fold_batchnorm": "kresnet.folding",
    "freeze": "kresnet.finetune",
    "from_keras_applications": "kresnet.applications",
    "from_torch": "kresnet.pytorch",
    "identity_block": "kresnet.blocks",
    "inspect": "kresnet.safety",
    "load": "kresnet.files",
    "load_weights": "kresnet.weights",
    "optimize": "kresnet.inference",
    "plan": "kresnet.config",
    "plot_blocks": "kresnet.plotting",
    "plot_model": "kresnet.plotting",
    "preprocess_input": "kresnet.preprocessing",
    "pretrained": "kresnet.models",
    "save": "kresnet.files",
    "to_keras_applications": "kresnet.applications",
    "to_torch": "kresnet.pytorch",
    "transfer_weights": "kresnet.weights",
}

__all__ = list(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kresnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

"""The model and optimizer of ``kresnet train``: a ResNet behind a Normalization layer.

This module imports Keras (and so TensorFlow) when it is imported;
:mod:`kresnet.training.run` imports it only when training runs.
"""

import hashlib

import keras
import numpy as np

import kresnet
from kresnet.training.settings import TrainingError


def check_model_name(settings):
    """Refuse a ``--model`` that is neither ``create_resnet`` nor a preset."""
    if settings.model != "create_resnet" and settings.model not in kresnet.PRESETS:
        raise TrainingError(f"--model must be create_resnet or one of the presets: "
                            f"{', '.join(kresnet.PRESETS)}; got {settings.model!r}")


def model_options(settings, stages, preset_stem=None):
    """The keyword options of the builder: ``--config``'s, with ``--width`` spelled out.

    >>> from kresnet.training.settings import Settings
    >>> model_options(Settings(width=16, config=(("stem", "cifar"),)), 3)
    {'stem': 'cifar', 'widths': (16, 32, 64), 'stem_width': 16}
    """
    options = settings.options
    if settings.width is not None:
        if "widths" in options or "stem_width" in options:
            raise TrainingError("give --width or --config widths=/stem_width=, not both")
        options["widths"] = tuple(settings.width * 2 ** i for i in range(stages))
        deep = options.get("stem", preset_stem) == "deep"
        options["stem_width"] = (settings.width // 2, settings.width // 2, settings.width) \
            if deep else settings.width
    return options


def build_model(settings, data, mean, variance):
    """The ResNet of ``settings`` behind a Normalization layer holding the training set's
    per-channel ``mean`` and ``variance``, so that it takes raw pixel values."""
    inputs = keras.Input(data.image_shape, name="input")
    x = keras.layers.Normalization(mean=mean.tolist(), variance=variance.tolist(),
                                   name="normalize")(inputs)
    config = settings.options
    try:
        if settings.model == "create_resnet":
            row = kresnet.DEPTHS.get(config.get("depth", 50))  # a bad depth: create_resnet says so
            blocks = config.get("blocks") or (row.blocks if row else (0,) * 4)
            return kresnet.create_resnet(data.image_shape, data.classes, input_tensor=x,
                                         **model_options(settings, len(blocks)))
        preset = kresnet.PRESETS[settings.model]
        blocks = config.get("blocks") or preset.options.get("blocks") or \
            kresnet.DEPTHS[preset.depth].blocks
        return kresnet.build(settings.model, input_tensor=x, classes=data.classes,
                             **model_options(settings, len(blocks), preset.options.get("stem")))
    except (TypeError, ValueError, KeyError) as error:
        raise TrainingError(f"--model {settings.model} with --config/--width: {error}") from None


def learning_rate(settings, steps_per_epoch):
    """``--lr`` as Keras takes it: a number, or a cosine decay to 0 over every epoch."""
    if settings.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(settings.learning_rate,
                                                      settings.epochs * steps_per_epoch)
    return settings.learning_rate


def make_optimizer(settings, steps_per_epoch):
    """The optimizer of ``--optimizer``, ``--lr``, ``--schedule``, ``--momentum``."""
    lr = learning_rate(settings, steps_per_epoch)
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=settings.momentum, nesterov=False)
    if settings.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=settings.momentum)
    if settings.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=settings.weight_decay)
    return keras.optimizers.Adam(lr)


def weights_digest(model):
    """SHA-256 of every weight of ``model``, in order: equal digests, equal models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()

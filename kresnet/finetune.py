"""Fine-tuning a pretrained ResNet in phases: :func:`freeze` sets how far the frozen part
reaches.

Keras 3 runs a ``BatchNormalization`` layer whose ``trainable`` is False in inference
mode (its moving statistics, not the batch's, and no update), which is what fine-tuning
on a small dataset wants: the frozen stages stay exactly the pretrained network.
"""

from typing import List, Optional

import keras

from kresnet import inspection, naming, validation


def freeze(model: keras.Model, up_to: Optional[str] = "res4", *,
           prefix: Optional[str] = None) -> List[str]:
    """Freeze the stem and the stages up to and including ``up_to`` (``"stem"``,
    ``"res2"`` ... the last stage, or ``None`` for nothing) and make every other layer of
    the ResNet trainable; returns the names of the frozen layers that hold weights.
    Preprocessing layers stay frozen. Call it again to move the boundary for a second
    phase (``freeze(model, "res3")``, or ``None`` to train everything), then compile
    again: Keras reads ``trainable`` when it compiles.

    >>> import kresnet
    >>> model = kresnet.build("resnet18", input_shape=(32, 32, 3), classes=3)
    >>> frozen = freeze(model, "res3")
    >>> frozen[:2], model.get_layer("bn3b_branch2b").trainable, model.get_layer("fc3").trainable
    (['conv1', 'bn_conv1'], False, True)
    """
    validation.keras_model(model)
    prefix = inspection.find_prefix(model, prefix, "freeze")
    stages = sorted({parsed.stage for layer in model.layers
                     if (parsed := naming.parse(layer.name, prefix)) is not None
                     and parsed.part == "block"})
    by_name = {"stem": 1, **{naming.stage_name(stage): stage for stage in stages}}
    validation.one_of("up_to", up_to, (None, *by_name))
    last = -1 if up_to is None else by_name[up_to]
    frozen = []
    for layer in model.layers:
        if naming.is_preprocessing(layer.name):
            layer.trainable = False
            continue
        parsed = naming.parse(layer.name, prefix)
        if parsed is None:
            continue
        stage = parsed.stage if parsed.part in ("stem", "block") else None
        layer.trainable = stage is None or stage > last
        if not layer.trainable and layer.weights:
            frozen.append(layer.name)
    return frozen

"""Batch normalisation folded into the convolutions before it, for inference.

At inference a ``BatchNormalization`` is the per-channel affine map
``y = gamma * (x - mean) / sqrt(variance + epsilon) + beta``. When ``x`` is the output of a
linear convolution ``x = W * input + b`` used by nothing else, the two are one convolution

``W' = W * s`` and ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(variance + epsilon)``

(``s`` scales each output channel, so grouped convolutions fold the same way).
:func:`fold_batchnorm` rebuilds a functional model with every such pair merged: the conv
keeps its name (``res2a_branch2a``) and gains a bias, the batch norm (``bn2a_branch2a``)
is gone. Batch norms that do not follow a convolution, such as the pre-activation
``bn{S}{B}_preact`` and ``bn_post`` of ResNet v2 (they follow a sum or a pooling, and a
ReLU separates them from the next conv), stay as they are and are named in a warning,
or refused with ``strict=True``.
"""

import warnings
from typing import Optional

import keras
import numpy as np

from kresnet import validation

#: Convolutions whose kernel is laid out ``(*window, in_channels / groups, filters)``.
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _nodes(layer):
    return list(getattr(layer, "_inbound_nodes", []))


def _consumers(model):
    """``id(tensor) -> number of layer calls of the model that take it as an input``."""
    counts = {}
    for layer in model.layers:
        for node in _nodes(layer):
            for tensor in keras.tree.flatten(node.input_tensors):
                counts[id(tensor)] = counts.get(id(tensor), 0) + 1
    return counts


def _conv_channel_axis(conv, rank):
    return 1 if conv.data_format == "channels_first" else rank - 1


def _why_not(bn, model, consumers, outputs):
    """The conv that ``bn`` folds into, or the reason it cannot: ``(conv, None)`` or
    ``(None, reason)``."""
    nodes = _nodes(bn)
    if len(nodes) != 1:
        return None, f"it is called {len(nodes)} times"
    if nodes[0].arguments.kwargs.get("training") is not None:
        return None, "it is called with an explicit `training` argument"
    inputs = keras.tree.flatten(nodes[0].input_tensors)
    source = inputs[0]._keras_history.operation if len(inputs) == 1 else None
    if type(source) not in _CONVS:
        what = type(source).__name__ if source is not None else "several tensors"
        if source is not None and getattr(source, "name", None):
            what += f" {source.name!r}"
        return None, f"it follows {what}, not a convolution"
    conv = source
    if len(_nodes(conv)) != 1:
        return None, f"the conv {conv.name!r} before it is called more than once"
    if conv.get_config().get("activation") not in ("linear", None):
        return None, f"the conv {conv.name!r} before it has an activation"
    conv_out = _nodes(conv)[0].output_tensors[0]
    if consumers.get(id(conv_out), 0) != 1 or id(conv_out) in outputs:
        return None, f"the output of the conv {conv.name!r} is also used elsewhere"
    rank = len(conv_out.shape)
    if bn.axis % rank != _conv_channel_axis(conv, rank):
        return None, f"it normalises axis {bn.axis}, not the channels of {conv.name!r}"
    if id(nodes[0].output_tensors[0]) in outputs:
        # Folding would make the conv the output, renaming the model's output.
        return None, "its output is an output of the model"
    return conv, None


def foldable(model):
    """Which batch norms of ``model`` fold into a conv: ``({bn_name: conv_name}, {bn_name:
    reason})``.

    >>> import kresnet
    >>> pairs, kept = foldable(kresnet.build("resnet20"))
    >>> pairs["bn2a_branch2a"], kept
    ('res2a_branch2a', {})
    """
    outputs = {id(t) for t in keras.tree.flatten(model.outputs)}
    consumers = _consumers(model)
    pairs, kept = {}, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            conv, reason = _why_not(layer, model, consumers, outputs)
            if conv is None:
                kept[layer.name] = reason
            else:
                pairs[layer.name] = conv.name
    return pairs, kept


def folded_weights(conv, bn):
    """The kernel and bias of ``conv`` followed by ``bn`` at inference, as numpy arrays of
    the conv kernel's dtype, computed in float64."""
    def array(variable):
        return keras.ops.convert_to_numpy(variable).astype(np.float64)

    mean, variance = array(bn.moving_mean), array(bn.moving_variance)
    gamma = array(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = array(bn.beta) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + bn.epsilon)
    kernel = array(conv.kernel)
    bias = array(conv.bias) if conv.use_bias else np.zeros_like(mean)
    dtype = keras.ops.convert_to_numpy(conv.kernel).dtype
    return (kernel * scale).astype(dtype), ((bias - mean) * scale + beta).astype(dtype)


def copy_weights(layer, source):
    """Give the copied ``layer`` the weights of ``source``. An adapted ``Normalization``
    computes its mean and variance from its weights only when it is built or adapted, not
    when they are set: ``finalize_state`` (Keras' own hook for that) computes them again,
    or the copy would normalise with the statistics of an empty layer."""
    layer.set_weights(source.get_weights())
    if isinstance(layer, keras.layers.Normalization):
        layer.finalize_state()


def _hold_initializers(layer):
    """Give the unbuilt ``layer`` zeros initializers and return its own, to be put back once
    it is built: a copy whose weights are all replaced need not draw random ones (a ResNet-152
    has 60 million)."""
    own = {key: value for key, value in vars(layer).items()
           if isinstance(value, keras.initializers.Initializer)}
    for key in own:
        setattr(layer, key, keras.initializers.Zeros())
    return own


def copy_model(model, make_layer):
    """A copy of the functional ``model`` whose layers ``make_layer(layer)`` makes (new and
    unbuilt, with the same weights' shapes, or with none), and whose weights are
    ``model``'s: built with zero kernels, as every weight is then set, and given each new
    layer's own initializers back."""
    held = []

    def clone(layer):
        copy = make_layer(layer)
        if layer.weights:
            held.append((copy, _hold_initializers(copy)))
        return copy

    result = keras.models.clone_model(model, clone_function=clone)
    for copy, initializers in held:
        for key, initializer in initializers.items():
            setattr(copy, key, initializer)
    originals = {layer.name: layer for layer in model.layers}
    for layer in result.layers:
        if layer.weights:
            copy_weights(layer, originals[layer.name])
    return result


def fold_batchnorm(model: keras.Model, *, strict: bool = False,
                   name: Optional[str] = None) -> keras.Model:
    """An inference-only copy of ``model`` with each batch norm that follows a conv folded
    into that conv's kernel and bias.

    The folded convs keep their names and get a bias; their batch norms are gone. Every
    other layer is copied with its weights, and the copy gives the outputs of
    ``model(x, training=False)`` up to float32 rounding (well within 1e-4 relative). A batch
    norm that cannot be folded (one after a sum or a pooling, as the pre-activation
    ``bn{S}{B}_preact`` and ``bn_post`` of ResNet v2; one after a conv whose output is used
    elsewhere or that has an activation) is kept as it is and named, with the reason, in a
    ``UserWarning``; ``strict=True`` raises ``ValueError`` listing them instead. The input
    and output names and the model's name (or ``name``) are those of ``model``. The copy
    has ``trainable=False``: folded batch norms no longer normalise by batch statistics,
    so it is meant for inference and export (it saves and loads like any Keras model). The
    original model is not changed.

    >>> import numpy as np, kresnet
    >>> model = kresnet.build("resnet20")
    >>> folded = fold_batchnorm(model)
    >>> "bn2a_branch2a" in [layer.name for layer in folded.layers]
    False
    >>> x = np.random.default_rng(0).random((2, 32, 32, 3), "float32")
    >>> bool(np.allclose(folded(x), model(x, training=False), atol=1e-5))
    True
    """
    validation.keras_model(model)
    validation.boolean("strict", strict)
    validation.model_name(name)
    if not hasattr(model, "_nodes_by_depth") or isinstance(model, keras.Sequential):
        raise ValueError(f"Model {model.name!r} is not a functional model; fold_batchnorm "
                         "rebuilds functional graphs (every kresnet model is one).")
    pairs, kept = foldable(model)
    if kept:
        listing = "; ".join(f"{bn} ({reason})" for bn, reason in kept.items())
        message = (f"{len(kept)} BatchNormalization layer(s) of {model.name!r} cannot be "
                   f"folded into a preceding convolution: {listing}.")
        if strict:
            raise ValueError(message + " Pass strict=False to keep them as they are and "
                             "fold the others.")
        warnings.warn(message + " They are kept as they are; the others are folded.",
                      UserWarning, stacklevel=2)
    folded_bns = set(pairs)
    conv_to_bn = {conv: bn for bn, conv in pairs.items()}

    held = []  # (copy, its initializers): copies built with zeros, as every weight is set below

    def clone(layer):
        if layer.name in folded_bns:
            return layer  # never called: call() below skips it
        config = layer.get_config()
        if layer.name in conv_to_bn:
            config.update(use_bias=True, bias_initializer="zeros")
        copy = layer.__class__.from_config(config)
        if layer.weights:
            held.append((copy, _hold_initializers(copy)))
        return copy

    def call(layer, *args, **kwargs):
        if layer.name in folded_bns:
            return args[0]
        return layer(*args, **kwargs)

    result = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for copy, initializers in held:
        for key, initializer in initializers.items():
            setattr(copy, key, initializer)
    originals = {layer.name: layer for layer in model.layers}
    for layer in result.layers:
        source = originals[layer.name]
        if layer.name in conv_to_bn:
            layer.set_weights(list(folded_weights(source,
                                                  originals[conv_to_bn[layer.name]])))
        elif source.weights:
            copy_weights(layer, source)
    if name is not None:
        result = keras.Model(result.input, result.output, name=name)
    result.trainable = False
    return result

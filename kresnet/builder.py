"""Building: a checked :class:`kresnet.config.ResNetConfig` in, a Keras ``Model`` out.

A model is stem -> stages -> head, read from the config's plan. This module knows nothing of
weight files: the front doors (:mod:`kresnet.models`) load weights after building.
"""

import contextlib
import dataclasses
import sys
from typing import Optional

import keras

from kresnet import heads, initializers, naming, validation
from kresnet.blocks import build_stage
from kresnet.config import KERNEL_INITIALIZER, ResNetConfig
from kresnet.features import feature_maps
from kresnet.options import Options
from kresnet.stems import build_stem


def _planned_names(config):
    prefix = config.name_prefix
    names = naming.StemNames(prefix).all() + naming.HeadNames(prefix).all(config.classes)
    for stage in config.plan.stages:
        for block in stage:
            names += block.names(prefix).all()
    return names


def tensor_shape(input_tensor, data_format):
    """``(height, width, channels)`` of a checked 4D ``input_tensor``."""
    given = tuple(validation.input_tensor(input_tensor).shape[1:])
    return (*given[1:], given[0]) if data_format == "channels_first" else given


def _check_input_tensor(input_tensor, config, data_format):
    shape = tensor_shape(input_tensor, data_format)
    if shape != tuple(config.input_shape):
        raise ValueError(f"`input_tensor` has the shape {shape} (height, width, channels), "
                         f"but the config's `input_shape` is {config.input_shape}.")
    validation.unused_names(input_tensor, _planned_names(config), "The network")


def new_input(config: ResNetConfig, data_format: Optional[str] = None) -> keras.KerasTensor:
    """The ``keras.Input`` of a model of ``config``, in ``data_format`` (Keras' image data
    format by default), named ``input`` with the config's prefix."""
    height, width, channels = config.input_shape
    first = (data_format or keras.config.image_data_format()) == "channels_first"
    shape = (channels, height, width) if first else (height, width, channels)
    return keras.Input(shape, name=naming.input_name(config.name_prefix))


def _model_input(config, input_tensor, options):
    """The tensor to build on and the model's inputs."""
    if input_tensor is None:
        x = new_input(config, options.data_format)
        return x, x
    sources = keras.utils.get_source_inputs(input_tensor)
    # One source: the model takes a tensor, as when it builds its own Input (a one-item list
    # would make Keras warn on every call with a plain tensor).
    return input_tensor, sources[0] if len(sources) == 1 else sources


def build_model(config: ResNetConfig, input_tensor: Optional[keras.KerasTensor] = None
                ) -> keras.Model:
    """Build the network that ``config`` describes, on a new input or on ``input_tensor``.

    >>> from kresnet.config import ResNetConfig
    >>> model = build_model(ResNetConfig(depth=18, input_shape=(64, 64, 3)))
    >>> model.name, model.output_shape, model.layers[1].name
    ('resnet18', (None, 10), 'conv1_pad')
    """
    if not isinstance(config, ResNetConfig):
        raise TypeError(f"`config` must be a kresnet.ResNetConfig. Received: config of type "
                        f"{type(config).__name__}")
    options = Options.of(config)
    # The default initializer only (a name Keras resolves to an unseeded HeNormal): one given
    # as an object or another name is used as given.
    fast = isinstance(config.kernel_initializer, str) and \
        config.kernel_initializer == KERNEL_INITIALIZER
    if fast:
        # A class: each conv makes its own stand-in, as each made its own HeNormal.
        options = dataclasses.replace(options, kernel_initializer=initializers.DrawnHeNormal)
    if input_tensor is not None:
        _check_input_tensor(input_tensor, config, options.data_format)
    x, inputs = _model_input(config, input_tensor, options)
    style = config.style
    x = build_stem(x, config.stem, config.stem_width, options, style.preact, config.stem_pool,
                   style.anti_alias)
    for stage in config.plan.stages:
        x = build_stage(x, stage, config.middle_kernel_size, style, options)
    if style.preact:
        stem_names = naming.StemNames(options.name_prefix)
        x = options.relu(options.bn(x, stem_names.post_bn), stem_names.post_relu)
    x = heads.build_head(x, config, options)
    with deep_graphs(_layers_deep(config)):
        model = keras.Model(inputs, x, name=config.model_name)
        if config.outputs == "stages":
            model = keras.Model(inputs, feature_maps(model), name=config.model_name)
    if fast:
        initializers.restore(model)
    return model


def _layers_deep(config):
    """About the number of layers on the longest path of the network."""
    return 20 + 16 * sum(config.plan.blocks)


@contextlib.contextmanager
def deep_graphs(layers_deep):
    """Keras walks a functional graph recursively, one Python frame or so per layer: the
    deepest presets (ResNet-RS-270 to -420, about 2,000 layers) pass Python's default limit
    of 1,000 frames. The limit is raised while the model is made, then put back."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 2 * layers_deep))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def build_undrawn(config: ResNetConfig, input_tensor: Optional[keras.KerasTensor] = None
                  ) -> keras.Model:
    """``build_model(config)`` for weights that will replace every one of its own: the conv
    kernels start at zero instead of being drawn (the draws are about half the time of
    building a full-size ResNet), then each conv gets ``config``'s initializer back, so the
    model is configured, saved and read by ``config_of`` as ``build_model``'s would be.

    >>> from kresnet.config import ResNetConfig
    >>> model = build_undrawn(ResNetConfig(depth=18, input_shape=(64, 64, 3)))
    >>> type(model.get_layer("conv1").kernel_initializer).__name__
    'HeNormal'
    >>> float(keras.ops.max(keras.ops.abs(model.get_layer("conv1").kernel)))
    0.0
    """
    if not isinstance(config, ResNetConfig):
        raise TypeError(f"`config` must be a kresnet.ResNetConfig. Received: config of type "
                        f"{type(config).__name__}")
    model = build_model(dataclasses.replace(config, kernel_initializer="zeros"), input_tensor)
    initializer = keras.initializers.get(config.kernel_initializer)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv1D)):
            layer.kernel_initializer = initializer
    return model

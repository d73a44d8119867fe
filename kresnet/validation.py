"""Argument checks, run before any layer is built.

Every message names the argument, what is allowed and what was received, in the style of
keras.applications: "`pooling` must be one of None, 'avg', 'max'. Received: pooling='sum'".
"""

import numbers
import os
import random
import re

import keras

from kresnet.depths import BLOCK_TYPES, DEPTHS


def _received(name, value):
    return f"Received: {name}={value!r}"


def is_int(value):
    """True for Python and NumPy integers, False for bools (``True`` is not a size)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(name, value, minimum=1):
    """Return ``value`` as an ``int`` if it is an integer >= ``minimum``."""
    if not is_int(value):
        raise TypeError(f"`{name}` must be an integer >= {minimum}. {_received(name, value)}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. {_received(name, value)}")
    return int(value)


def number(name, value, low, high, low_open=False, high_open=False):
    """Return ``value`` as a float if it lies in the interval; the message states it."""
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number in {interval}. {_received(name, value)}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        raise ValueError(f"`{name}` must be a number in {interval}. {_received(name, value)}")
    return float(value)


def boolean(name, value):
    """Return ``value`` if it is ``True`` or ``False`` (not 0, 1 or None)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. {_received(name, value)}")
    return value


def keras_model(value, name="model"):
    """Return ``value`` if it is a ``keras.Model``; ``TypeError`` naming the argument otherwise."""
    if not isinstance(value, keras.Model):
        raise TypeError(f"`{name}` must be a keras.Model. Received: {name} of type "
                        f"{type(value).__name__}")
    return value


def path(value, name="path"):
    """Return ``value`` as a non-empty ``str`` path; it may be a str or ``os.PathLike``."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, bytes):
        raise TypeError(f"`{name}` must be a str or os.PathLike. {_received(name, value)}")
    value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a str or os.PathLike. {_received(name, value)}")
    if not value:
        raise ValueError(f"`{name}` must be a non-empty path. {_received(name, value)}")
    return value


def shape_text(shape):
    """A shape as kresnet prints it: sizes joined by ``x``, ``?`` for an unknown size.

    >>> shape_text((None, 56, 56, 256)[1:]), shape_text((7, None))
    ('56x56x256', '7x?')
    """
    return "x".join("?" if d is None else str(d) for d in shape)


def one_of(name, value, allowed):
    """Return ``value`` if it is in ``allowed``; the message lists the allowed values.
    A value of a type none of them has is a ``TypeError``, another one a ``ValueError``.

    >>> one_of("pooling", "avg", (None, "avg", "max"))
    'avg'
    """
    listed = ", ".join(repr(a) for a in allowed)
    message = f"`{name}` must be one of {listed}. {_received(name, value)}"
    if type(value) not in {type(a) for a in allowed}:
        raise TypeError(message)
    if value not in allowed:
        raise ValueError(message)
    return value


def int_pair(name, value, what, odd=False):
    """Return ``(a, b)`` for an int or a pair of ints that are positive (and odd if asked)."""
    rule = f"a positive {'odd ' if odd else ''}integer or a pair of them"
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(is_int(v) for v in pair):
        raise TypeError(f"`{name}` ({what}) must be {rule}. {_received(name, value)}")
    if any(v < 1 or (odd and v % 2 == 0) for v in pair):
        raise ValueError(f"`{name}` ({what}) must be {rule}. {_received(name, value)}")
    return tuple(int(v) for v in pair)


def kernel_size(value, name="middle_kernel_size"):
    """A positive odd kernel size (odd so that 'same' padding is symmetric)."""
    return int_pair(name, value, "the kernel size", odd=True)


def strides(value, name="strides"):
    return int_pair(name, value, "the stride", odd=False)


def filters(value, name="filters"):
    """Two filters (basic block) or three (bottleneck), all positive ints."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(
            f"`{name}` must be a list of 2 (basic block) or 3 (bottleneck) positive "
            f"integers. {_received(name, value)}")
    if len(value) not in (2, 3):
        raise ValueError(
            f"`{name}` must have 2 (basic block) or 3 (bottleneck) entries, not "
            f"{len(value)}. {_received(name, value)}")
    return tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(value))


_LABEL = re.compile(r"^[A-Za-z0-9]+$")


def stage_and_block(stage, block):
    """``stage``: a positive int (or digits); ``block``: letters and digits, e.g. ``'b1'``."""
    stage_rule = "`stage` must be a positive integer such as 2. "
    if is_int(stage):
        positive_int("stage", stage)
    elif not isinstance(stage, str):
        raise TypeError(stage_rule + _received("stage", stage))
    elif not stage.isdigit():
        raise ValueError(stage_rule + _received("stage", stage))
    block_rule = "`block` must be a non-empty string of letters and digits such as 'a' or 'b1'. "
    if not isinstance(block, str):
        raise TypeError(block_rule + _received("block", block))
    if not _LABEL.match(block):
        raise ValueError(block_rule + _received("block", block))
    return stage, block


def name_prefix(value, name="name_prefix"):
    rule = "a string of letters, digits, '_', '.' or '-' (may be empty)"
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be {rule}. {_received(name, value)}")
    if not re.match(r"^[A-Za-z0-9_.\-]*$", value):
        raise ValueError(f"`{name}` must be {rule}. {_received(name, value)}")
    return value


def model_name(value):
    if value is not None and not isinstance(value, str):
        raise TypeError(f"`name` must be None or a non-empty string without '/'. "
                        f"{_received('name', value)}")
    if value is not None and (not value or "/" in value):
        raise ValueError(f"`name` must be None or a non-empty string without '/'. "
                         f"{_received('name', value)}")
    return value


def depth(value):
    """A row of the table (it also supplies the block type of a custom ``blocks`` list)."""
    allowed = ", ".join(str(d) for d in DEPTHS)
    if not is_int(value):
        raise TypeError(f"`depth` must be one of {allowed}. {_received('depth', value)}")
    if value not in DEPTHS:
        raise ValueError(f"`depth` must be one of {allowed}. {_received('depth', value)}")
    return int(value)


def blocks(value):
    """A custom stage list: blocks per stage, 1 to 8 stages of at least one block."""
    rule = "`blocks` must be a non-empty list of positive integers, one per stage, such as " \
        f"(3, 4, 6, 3). {_received('blocks', value)}"
    if not isinstance(value, (tuple, list)):
        raise TypeError(rule)
    if not value:
        raise ValueError(rule)
    if len(value) > 8:
        raise ValueError(f"`blocks` may list at most 8 stages. {_received('blocks', value)}")
    return tuple(positive_int(f"blocks[{i}]", v) for i, v in enumerate(value))


def block_type(value):
    return one_of("block_type", value, BLOCK_TYPES)


def spatial_shape(name, shape, min_size, data_format="channels_last"):
    """Check an input shape of three entries; return it as ``(height, width, channels)``.

    ``shape`` is given in ``data_format`` order. Height and width may be ``None`` (any size,
    for fully convolutional use); given sizes must be at least ``min_size``, the total
    downsampling of the network (not checked where ``min_size`` is None). Channels must be a
    positive int.
    """
    order = "(channels, height, width)" if data_format == "channels_first" else \
        "(height, width, channels)"
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"`{name}` must be a tuple {order}. {_received(name, shape)}")
    if len(shape) != 3:
        raise ValueError(f"`{name}` must have 3 entries {order}, not {len(shape)}. "
                         f"{_received(name, shape)}")
    if data_format == "channels_first":
        channels, height, width = shape
    else:
        height, width, channels = shape
    for what, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if not is_int(size):
            raise TypeError(f"`{name}`: {what} must be a positive integer or None. "
                            f"{_received(name, shape)}")
        if min_size is not None and size < min_size:
            raise ValueError(
                f"`{name}`: {what} must be None or at least {min_size} (the network "
                f"downsamples by {min_size}). {_received(name, shape)}")
    if not is_int(channels):
        raise TypeError(f"`{name}`: channels must be a positive integer. "
                        f"{_received(name, shape)}")
    if channels < 1:
        raise ValueError(f"`{name}`: channels must be a positive integer. "
                         f"{_received(name, shape)}")
    return (height, width, int(channels))


def input_tensor(value):
    if value is not None and not isinstance(value, keras.KerasTensor):
        raise TypeError("`input_tensor` must be None or a Keras tensor (the output of "
                        f"`keras.Input` or of a layer). Received: {type(value).__name__}")
    if value is not None and len(value.shape) != 4:
        raise ValueError("`input_tensor` must be a 4D image tensor (batch, height, width, "
                         f"channels). Received shape: {tuple(value.shape)}")
    return value


def classifier_activation(value):
    if value is None or callable(value):
        return value
    if not isinstance(value, str):
        raise TypeError("`classifier_activation` must be None, a string or a callable. "
                        f"{_received('classifier_activation', value)}")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError("`classifier_activation` must be a Keras activation such as 'softmax' "
                         f"or None. {_received('classifier_activation', value)}") from error
    return value


def kernel_initializer(value):
    rule = "`kernel_initializer` must be a Keras initializer or its name, such as " \
        f"'he_normal'. {_received('kernel_initializer', value)}"
    if not isinstance(value, (str, dict, keras.initializers.Initializer)):
        raise TypeError(rule)
    # Resolving a name makes an initializer, and an unseeded Keras initializer draws its
    # seed from Python's `random`: checking must not move that state, or a model built
    # right after keras.utils.set_random_seed would differ from the next one built alike.
    state = random.getstate()
    try:
        keras.initializers.get(value)
    except (ValueError, TypeError) as error:
        raise ValueError(rule) from error
    finally:
        random.setstate(state)
    return value


def weights(value):
    """``None``, ``"imagenet"`` or the path of an existing weights file (``.weights.h5``,
    ``.h5`` or ``.keras``)."""
    if value is None or value == "imagenet":
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError("`weights` must be None, 'imagenet' or the path to a weights file. "
                        f"{_received('weights', value)}")
    if not os.path.isfile(value):
        raise ValueError("`weights` must be None, 'imagenet', the path to an existing "
                         "weights file or (in kresnet.build) a name of kresnet.WEIGHTS; no "
                         f"file at {value!r}")
    return value


def graph_layer_names(tensors):
    """Names of every layer upstream of ``tensors`` (Keras tensors): the graph they carry."""
    names, seen = set(), set()
    stack = [t._keras_history.operation for t in tensors
             if getattr(t, "_keras_history", None) is not None]
    while stack:
        operation = stack.pop()
        if id(operation) in seen:
            continue
        seen.add(id(operation))
        names.add(operation.name)
        for node in operation._inbound_nodes:
            stack.extend(t._keras_history.operation for t in node.input_tensors)
    return names


def unused_names(tensor, names, what):
    """Raise if a name about to be given is already used in ``tensor``'s graph."""
    taken = graph_layer_names([tensor]).intersection(names)
    if taken:
        raise ValueError(
            f"{what} would repeat layer name(s) already in the graph: "
            f"{', '.join(sorted(taken))}. Pick another stage/block or a `name_prefix`.")


def channels_of(tensor, data_format):
    return tensor.shape[1 if data_format == "channels_first" else -1]


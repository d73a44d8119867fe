"""Save and load ``.keras`` files without losing a model or running code hidden in a file.

:func:`save` never leaves a half-written file at ``path``: it writes a temporary file in the
same folder, flushes it to disk and renames it over ``path`` in one step, so ``path`` holds
either the old complete file or the new complete one, even if the process is killed.

:func:`load` reads the archive's ``config.json`` before Keras deserialises anything and
refuses, naming the file, the layer and the reason, a model that would run code: a
``Lambda`` layer, a class or function that is not part of Keras (a custom object), or a
layer that unpickles or loads outside code. ``trusted=True`` lifts that refusal (and Keras'
own ``safe_mode``) for files from people you trust. A file that is not a complete ``.keras``
archive (empty, zero-filled, truncated, damaged, an HDF5 ``.h5``/``.weights.h5`` file, a
folder, a missing path) raises ``ValueError`` naming the file and what is wrong with it.
"""

import copy
import io
import json
import os
import re
import secrets
import zipfile
from typing import Union

import keras

from kresnet import safety, validation

#: ``.keras`` files of Keras 3 (zip archives, checked by :mod:`kresnet.safety`).
EXTENSION = ".keras"
#: Temporary files of :func:`save` (``.{name}.{random hex}.part.keras``) and of
#: :func:`write_bytes` (``.{name}.{random hex}.part``), next to the target.
TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{16}\.part(\.keras)?$")
#: For the kill tests only (tests/test_files.py), not an API: when set, :func:`_replace`
#: calls ``_phase(step, temporary)`` as it finishes each step, with step "reserved" (the
#: empty temporary exists), "written", "synced" (flushed to disk) and "replaced" (renamed
#: over the target, before the folder is flushed), so that a test can kill the writing
#: process at exactly that point. ``None``, the default, costs one comparison per step.
_phase = None


def save(model: keras.Model, path: Union[str, os.PathLike]) -> str:
    """Write ``model`` to the ``.keras`` file ``path`` atomically; return ``path`` as a str.

    The model is written to a temporary file ``.{name}.{random}.part.keras`` in the same
    folder, flushed to disk (``fsync``) and renamed over ``path`` (``os.replace``), so that
    ``path`` is never half-written: a crash or a kill leaves the old file (or none) in place.
    The temporary file is removed if saving fails; only a killed process can leave one
    behind. Missing folders are created.

    >>> import os, tempfile, kresnet
    >>> model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    >>> path = save(model, os.path.join(tempfile.mkdtemp(), "tiny.keras"))
    >>> os.path.basename(path), sorted(os.listdir(os.path.dirname(path)))
    ('tiny.keras', ['tiny.keras'])
    """
    validation.keras_model(model)
    path = validation.path(path)
    if not path.endswith(EXTENSION):
        raise ValueError(f"`path` must end in '{EXTENSION}' (the Keras 3 model file); for "
                         "weights alone use model.save_weights('....weights.h5'). "
                         f"Received: path={path!r}")
    if os.path.isdir(path):
        raise ValueError(f"`path` {path!r} is a folder; pass the path of a file ending in "
                         f"'{EXTENSION}'.")
    # Keras insists on the .keras ending, so the temporary file keeps it.
    _replace(path, lambda temporary: keras.saving.save_model(model, temporary), EXTENSION)
    return path


def write_bytes(path: Union[str, os.PathLike], data: bytes) -> str:
    """Write ``data`` to ``path`` as :func:`save` writes a model: never half-written.

    For the small files that go with a model (a run's history, a pointer to its last
    checkpoint): a temporary ``.{name}.{random}.part`` file, flushed and renamed over
    ``path``. Missing folders are created; returns ``path`` as a str.

    >>> import os, tempfile
    >>> path = write_bytes(os.path.join(tempfile.mkdtemp(), "state.json"), b"{}")
    >>> open(path, "rb").read(), os.listdir(os.path.dirname(path))
    (b'{}', ['state.json'])
    """
    path = validation.path(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"`data` must be bytes. Received: data of type {type(data).__name__}")

    def write(temporary):
        with open(temporary, "wb") as file:
            file.write(data)

    _replace(path, write)
    return path


def _replace(path, write, suffix=""):
    """Call ``write(temporary)`` on a fresh file beside ``path``, flush it, rename it over
    ``path``; the temporary file is removed if anything fails."""
    target = os.path.abspath(path)
    folder, base = os.path.split(target)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{base}.{secrets.token_hex(8)}.part{suffix}")
    # Reserve the name (O_EXCL), with the permissions an ordinary new file gets.
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        if _phase is not None:
            _phase("reserved", temporary)
        write(temporary)
        if _phase is not None:
            _phase("written", temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        if _phase is not None:
            _phase("synced", temporary)
        os.replace(temporary, target)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
    if _phase is not None:
        _phase("replaced", temporary)
    _sync_folder(folder)


def _sync_folder(folder):
    """Flush the rename to disk (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load(path: Union[str, os.PathLike], *, trusted: bool = False,
         expect: Union[None, str, keras.Model] = None, compile: bool = True,
         limits: safety.Limits = safety.LIMITS) -> keras.Model:
    """Load the model of the ``.keras`` file ``path``, refusing files that would run code.

    Keras' ``safe_mode`` stays on, and before Keras reads the file
    :func:`kresnet.safety.check_keras_file` checks it within ``limits``: member names and
    declared sizes (no bomb is inflated), ``config.json``'s nesting, every object it names
    (a ``Lambda`` layer, a class or function that is not part of Keras, a layer that loads
    outside code or reads a file is refused) and the HDF5 structure of the weights (no
    links or storage outside the file). A refusal is a ``ValueError`` naming the file, the
    member or layer, and the reason (docs/security.md). Pass ``trusted=True`` only for
    files from people you trust: the check of the objects is skipped and Keras loads with
    ``safe_mode=False`` (custom classes must then be importable or registered); the other
    checks stay.

    ``expect``: ``None`` accepts any Keras model; a model name (str) requires the file's
    model to have that name; a ``keras.Model`` requires the file's model to have its layers
    (names, classes and weight shapes), so that a file of another model is refused.
    ``compile``: restore the training configuration (optimizer, loss) saved with the model.

    A missing path, a folder, an empty, zero-filled, truncated or damaged file, an HDF5
    file (``.h5``, ``.weights.h5``) or a zip that is no Keras model raises ``ValueError``
    naming the file and the problem.

    >>> import os, tempfile, kresnet
    >>> model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    >>> path = save(model, os.path.join(tempfile.mkdtemp(), "tiny.keras"))
    >>> load(path, expect=model).get_layer("res2a").name
    'res2a'
    """
    path = validation.path(path)
    validation.boolean("trusted", trusted)
    validation.boolean("compile", compile)
    safety.checked_limits(limits)
    if not (expect is None or isinstance(expect, (str, keras.Model))):
        raise TypeError("`expect` must be None, a model name (str) or a keras.Model. "
                        f"Received: expect of type {type(expect).__name__}")
    config = read_config(path, limits, objects=not trusted)
    saved_name = config.get("config", {}).get("name") if isinstance(config.get("config"),
                                                                    dict) else None
    if isinstance(expect, str) and isinstance(saved_name, str) and saved_name != expect:
        # Refused before anything is built: the name is in config.json.
        raise ValueError(f"{path!r} holds model {saved_name!r}, not the expected {expect!r}.")
    try:
        model = _load_undrawn(path, config, compile, not trusted)
        if model is None:
            model = keras.saving.load_model(path, compile=compile, safe_mode=not trusted)
    except MemoryError:
        raise
    except zipfile.BadZipFile as error:  # Keras reads the weights member, checking its CRC
        raise ValueError(f"{path!r} is damaged: a member fails its checksum ({error}).") \
            from error
    except Exception as error:  # every failure gets the file's name
        raise ValueError(f"Could not load {path!r}: {type(error).__name__}: {error}") \
            from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a Keras model.")
    if expect is not None:
        _check_expected(path, model, expect)
    return model


def read_config(path: str, limits: safety.Limits = safety.LIMITS, *,
                objects: bool = True) -> dict:
    """The parsed ``config.json`` of the ``.keras`` file ``path``, after
    :func:`kresnet.safety.check_keras_file` (bounded reads, member names, checksums, the
    allow-list of objects when ``objects`` is true, the weights' HDF5 structure);
    ``ValueError`` naming the file and the problem otherwise."""
    config = safety.check_keras_file(path, limits, objects=objects).config
    if not path.endswith(EXTENSION):
        raise safety.NotAModelError(f"{path!r} is a .keras archive under another name; Keras "
                                    f"reads it only with a name ending in '{EXTENSION}'. "
                                    "Rename it.")
    return config


def unsafe_object(config):
    """``(where, why)`` for the first object of a ``.keras`` configuration that would run
    code when loaded, or ``None``: :func:`kresnet.safety.config_problem`."""
    return safety.config_problem(config)


def _layout(model):
    return [(layer.name, type(layer).__name__, [tuple(w.shape) for w in layer.weights])
            for layer in model.layers]


def _check_expected(path, model, expect):
    """Refuse a file whose model is not the expected one (see :func:`load`)."""
    if isinstance(expect, str):
        if model.name != expect:
            raise ValueError(f"{path!r} holds model {model.name!r}, not the expected "
                             f"{expect!r}.")
        return
    ours, theirs = _layout(model), _layout(expect)
    for index, (found, wanted) in enumerate(zip(ours, theirs)):
        if found != wanted:
            raise ValueError(
                f"{path!r} holds another model than the expected {expect.name!r}: its layer "
                f"{index} is {found[1]} {found[0]!r} with weight shapes {found[2]} where the "
                f"expected model has {wanted[1]} {wanted[0]!r} with {wanted[2]}.")
    if len(ours) != len(theirs):
        raise ValueError(f"{path!r} holds another model than the expected {expect.name!r}: "
                         f"it has {len(ours)} layers, the expected model {len(theirs)}.")


# Layer classes whose random initializers _load_undrawn skips, and the config keys of those
# initializers: Keras keeps each under the same name as an attribute of the layer, where
# get_config reads it back.
_UNDRAWN_LAYERS = frozenset({"Conv1D", "Conv2D", "Conv3D", "Dense", "DepthwiseConv2D",
                             "SeparableConv2D", "EinsumDense"})
_UNDRAWN_KEYS = ("kernel_initializer", "depthwise_initializer", "pointwise_initializer")
# Model classes whose configs list their layers under "layers", as Keras' loader reads them.
_MODELS = frozenset({"Functional", "Sequential", "Model"})
_STAND_IN = "kresnet>Undrawn"
# The parts of Keras' loader (keras.src.saving.saving_lib) that _load_undrawn calls.
_LOADER_PARTS = ("_model_from_config", "H5IOStore", "_load_state", "_raise_loading_failure")
# What Keras' own loader reads from an archive of a model without assets.
_PLAIN_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})


class _Undrawn(keras.initializers.Initializer):
    """Stands in for a saved kernel initializer while :func:`_load_undrawn` builds: it makes
    the saved initializer (so that seeds are taken from Python's ``random`` in Keras'
    loader's order and shared initializers stay shared) but gives zeros."""

    def __init__(self, original):
        self.original = keras.initializers.deserialize(original)

    def __call__(self, shape, dtype=None):
        return keras.ops.zeros(shape, dtype=dtype)

    def get_config(self):
        return {"original": keras.initializers.serialize(self.original)}


def _undraw(config):
    """Replace, in the model configuration ``config`` (changed in place), the random kernel
    initializers of plain layers, in the model and the models nested in it, by
    :class:`_Undrawn` stand-ins; return ``(layer path, key, original)`` for each, the path
    being the names from the outer model's first layer inwards."""
    held = []

    def walk(layers, names):
        for layer in layers if isinstance(layers, list) else ():
            inner = layer.get("config") if isinstance(layer, dict) else None
            if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
                continue
            path = names + (inner["name"],)
            if layer.get("module") == "keras.layers" and \
                    layer.get("class_name") in _UNDRAWN_LAYERS:
                for key in _UNDRAWN_KEYS:
                    value = inner.get(key)
                    if isinstance(value, dict) and value.get("module") == "keras.initializers" \
                            and value.get("class_name") != "Zeros":
                        held.append((path, key, value))
                        inner[key] = {"module": None, "class_name": "Undrawn",
                                      "config": {"original": value},
                                      "registered_name": _STAND_IN}
            elif layer.get("class_name") in _MODELS:
                walk(inner.get("layers"), path)

    walk(config.get("config", {}).get("layers"), ())
    return held


def _restore(model):
    """Give every layer of ``model`` and of the models in it its saved initializer back in
    place of the :class:`_Undrawn` stand-in; the number of stand-ins replaced."""
    replaced, models = 0, [model]
    while models:
        for layer in models.pop().layers:
            if isinstance(layer, keras.Model):
                models.append(layer)
            for key in _UNDRAWN_KEYS:
                value = getattr(layer, key, None)
                if isinstance(value, _Undrawn):
                    setattr(layer, key, value.original)
                    replaced += 1
    return replaced


def _load_undrawn(path, config, compile, safe_mode):
    """The model of ``path`` as ``keras.saving.load_model`` would return it, but built with
    zero kernels before its saved weights are read: a random draw for every kernel that is
    overwritten at once was a third of the time of loading a ResNet. Each layer gets its
    saved initializer back (made where Keras' loader makes it, so seeds and shared objects
    are the same), so the model, its configuration and a file saved from it are those
    Keras' loader gives. ``None`` where this Keras lacks the loader's parts used here, the
    archive holds more than a plain model (assets, another weights format), or a stand-in
    could not be found again in the built model: the caller then loads with Keras' own
    loader."""
    try:
        from keras.src.saving import saving_lib  # the parts of load_model, to skip the draws
        from_config, store_class, load_state, fail = (getattr(saving_lib, name)
                                                      for name in _LOADER_PARTS)
    except (ImportError, AttributeError):
        return None
    with zipfile.ZipFile(path) as archive:
        if set(archive.namelist()) != _PLAIN_MEMBERS:
            return None
        config = copy.deepcopy(config)
        held = _undraw(config)
        model = from_config(json.dumps(config), {_STAND_IN: _Undrawn}, compile, safe_mode)
        if _restore(model) != len(held):
            return None
        # In memory, as Keras' loader reads it where memory suffices; kresnet.safety has
        # bounded the member's size.
        store = store_class(io.BytesIO(archive.read("model.weights.h5")), mode="r")
        try:
            failed, messages = set(), {}
            load_state(model, weights_store=store, assets_store=None, inner_path="",
                       visited_saveables=set(), failed_saveables=failed,
                       error_msgs=messages)
        finally:
            store.close()
    if failed:
        fail(messages)
    return model

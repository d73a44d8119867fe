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

import json
import os
import re
import secrets
import zipfile
import zlib
from typing import Union

import keras

from kresnet import validation

#: ``.keras`` files of Keras 3: a zip archive holding at least these members.
CONFIG = "config.json"
EXTENSION = ".keras"
#: Temporary files of :func:`save` (``.{name}.{random hex}.part.keras``) and of
#: :func:`write_bytes` (``.{name}.{random hex}.part``), next to the target.
TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{16}\.part(\.keras)?$")
#: Keras modules whose functions are serialised as ``{"module": "builtins", ...}``.
_FUNCTION_MODULES = ("activations", "constraints", "initializers", "losses", "metrics",
                     "optimizers", "regularizers")
#: Built-in Keras layers that run code or read other files when they are loaded.
_UNSAFE = {
    "Lambda": "a Lambda layer runs Python code stored in the file",
    "__lambda__": "it holds a Python function stored as code in the file",
    "TorchModuleWrapper": "a TorchModuleWrapper unpickles a PyTorch module stored in the file",
    "TFSMLayer": "a TFSMLayer loads a TensorFlow SavedModel from another path",
    "JaxLayer": "a JaxLayer calls Python functions that are not part of Keras",
    "FlaxLayer": "a FlaxLayer calls a Flax module that is not part of Keras",
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
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
         expect: Union[None, str, keras.Model] = None, compile: bool = True) -> keras.Model:
    """Load the model of the ``.keras`` file ``path``, refusing files that would run code.

    Keras' ``safe_mode`` stays on, and before Keras reads the file its ``config.json`` is
    checked: a ``Lambda`` layer, a class or function that is not part of Keras (a custom
    object), or a layer that loads outside code makes :func:`load` raise ``ValueError``
    naming the file, the layer and the reason. Pass ``trusted=True`` only for files from
    people you trust: the check is skipped and Keras loads with ``safe_mode=False`` (custom
    classes must then be importable or registered).

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
    if not (expect is None or isinstance(expect, (str, keras.Model))):
        raise TypeError("`expect` must be None, a model name (str) or a keras.Model. "
                        f"Received: expect of type {type(expect).__name__}")
    config = read_config(path)
    saved_name = config.get("config", {}).get("name") if isinstance(config.get("config"),
                                                                    dict) else None
    if isinstance(expect, str) and isinstance(saved_name, str) and saved_name != expect:
        # Refused before anything is built: the name is in config.json.
        raise ValueError(f"{path!r} holds model {saved_name!r}, not the expected {expect!r}.")
    if not trusted:
        problem = unsafe_object(config)
        if problem is not None:
            where, reason = problem
            raise ValueError(f"Refusing to load {path!r}: {where}: {reason}. Load it with "
                             "kresnet.load(path, trusted=True) only if you trust whoever "
                             "made the file.")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=not trusted)
    except MemoryError:
        raise
    except Exception as error:  # every failure gets the file's name
        raise ValueError(f"Could not load {path!r}: {type(error).__name__}: {error}") \
            from error
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path!r} holds a {type(model).__name__}, not a Keras model.")
    if expect is not None:
        _check_expected(path, model, expect)
    return model


def read_config(path):
    """The parsed ``config.json`` of the ``.keras`` file ``path``, after checking that the
    file is a complete archive; ``ValueError`` naming the file and the problem otherwise."""
    if not os.path.lexists(path):
        raise ValueError(f"No file at {path!r}: `path` must be an existing .keras file.")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a folder, not a .keras file.")
    if not os.path.isfile(path):
        raise ValueError(f"{path!r} is not a regular file (a broken link, a device or a "
                         "pipe), so it cannot be a .keras file.")
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): not a .keras file. It may be what "
                         "is left of an interrupted copy or save.")
    with open(path, "rb") as file:
        head = file.read(8)
        zero_filled = not head.strip(b"\0") and _only_zeros(file)
    if zero_filled:
        raise ValueError(f"{path!r} holds only zero bytes ({size} of them): not a .keras "
                         "file. It may be a preallocated file whose writing never happened.")
    if head == _HDF5_SIGNATURE:
        raise ValueError(f"{path!r} is an HDF5 file (.h5 or .weights.h5), not a .keras "
                         "model file. Load weights into a model with "
                         "kresnet.load_weights(model, path).")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ValueError(f"{path!r} is truncated or damaged: it starts like a .keras "
                             "zip archive but its end (the zip directory) is missing.")
        raise ValueError(f"{path!r} is not a .keras file (a .keras file is a zip archive; "
                         f"this file starts with {head!r}).")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ValueError(f"{path!r} is damaged: member {bad!r} fails its checksum.")
            if CONFIG not in archive.namelist():
                raise ValueError(f"{path!r} is a zip archive but not a .keras model file: "
                                 f"it has no {CONFIG}.")
            text = archive.read(CONFIG)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error,
            NotImplementedError) as error:
        raise ValueError(f"{path!r} is truncated or damaged: {error}") from error
    try:
        config = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path!r} is damaged: its {CONFIG} is not valid JSON ({error}).") \
            from error
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"{path!r} is not a .keras model file: its {CONFIG} describes no "
                         "Keras object.")
    if not path.endswith(EXTENSION):
        raise ValueError(f"{path!r} is a .keras archive under another name; Keras reads it "
                         f"only with a name ending in '{EXTENSION}'. Rename it.")
    return config


def _only_zeros(file, chunk=1 << 20):
    while True:
        block = file.read(chunk)
        if not block:
            return True
        if block.strip(b"\0"):
            return False


def unsafe_object(config):
    """``(where, why)`` for the first object of a ``.keras`` configuration that would run
    code when loaded, or ``None`` if every object is a built-in Keras one."""
    stack = [(config, None, ())]
    while stack:
        node, layer, keys = stack.pop()
        if isinstance(node, list):
            stack.extend((item, layer, keys) for item in reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        inner = node.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("name"), str) and \
                "class_name" in node and keys and keys[-1] == "layers":
            layer = inner["name"]
        if "class_name" in node:
            why = _why_unsafe(node)
            if why is not None:
                where = f"layer {layer!r}" if layer is not None else \
                    f"entry {'.'.join(str(k) for k in keys) or 'top level'!r} of {CONFIG}"
                return where, why
        for key, value in reversed(node.items()):
            stack.append((value, layer, (*keys, key)))
    return None


def _why_unsafe(node):
    class_name = node.get("class_name")
    module = node.get("module")
    registered = node.get("registered_name")
    if not isinstance(class_name, str):
        return f"its class_name {class_name!r} is not a string"
    if class_name in _UNSAFE:
        return _UNSAFE[class_name]
    if module is None and class_name.startswith("__") and class_name.endswith("__"):
        return None  # Keras' own markers: __keras_tensor__, __tensor__, __numpy__, ...
    if class_name == "function":
        name = node.get("config")
        if module == "builtins" and isinstance(name, str) and any(
                callable(getattr(getattr(keras, m), name, None)) for m in _FUNCTION_MODULES):
            return None
        return (f"function {name!r} is not part of Keras (a custom object): loading it "
                "needs code from outside the file's Keras")
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        origin = ", ".join(([f"registered as {registered!r}"] if registered else []) +
                           ([f"module {module!r}"] if module else []))
        return (f"class {class_name!r}{f' ({origin})' if origin else ''} is not part of "
                "Keras (a custom object): building it runs code from outside Keras")
    if registered not in (None, class_name):
        return (f"class {class_name!r} is registered as {registered!r}, not as a built-in "
                "Keras class (a custom object)")
    return None


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

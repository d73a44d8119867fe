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

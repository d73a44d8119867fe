"""Checks of untrusted model and weight files, made before Keras, h5py or torch reads them.

A ``.keras`` file is a zip archive. :func:`check_keras_file` decides whether one is safe to
hand to Keras by reading as little as it can: first the zip directory (member names and
the sizes they declare, refused by :class:`Limits` before anything is inflated), then each
member's checksum in bounded chunks, then ``config.json`` with a cap, then every object that
``config.json`` names against an allow-list of Keras' own classes and functions, and last
the structure of ``model.weights.h5`` (never its data). Weight files get the same care:
:func:`check_hdf5` for ``.h5``/``.weights.h5``, :func:`read_safetensors` and
:func:`read_pth` for PyTorch's formats. :func:`inspect` reports on a ``.keras`` file
without building it.

Every refusal is an :class:`UnsafeFileError` (a ``ValueError``) naming the file, the
member or layer, and the reason; a file that is no model file at all raises
:class:`NotAModelError` (also a ``ValueError``). docs/security.md gives the threat model.
"""

import dataclasses
import itertools
import json
import os
import struct
import sys
import tempfile
import zipfile
import zlib
from collections import Counter
from typing import Optional, Union

from kresnet import naming, validation

MiB = 1 << 20
GiB = 1 << 30

CONFIG = "config.json"
METADATA = "metadata.json"
WEIGHTS = "model.weights.h5"
ASSETS = "assets/"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """How much a check may read, inflate and hold, for any file. The defaults are far
    above what real models need (a ResNet-269 has a 1 MB ``config.json`` and 410 MB of
    weights) and far below what hurts a server.

    >>> Limits().config_bytes // MiB, Limits(config_bytes=4 * MiB).config_bytes // MiB
    (32, 4)
    """

    #: Most bytes ``config.json`` may declare; it is read into memory and parsed.
    config_bytes: int = 32 * MiB
    #: Most bytes ``metadata.json`` may declare.
    metadata_bytes: int = 1 * MiB
    #: Most bytes any member may declare, and all members together.
    member_bytes: int = 64 * GiB
    total_bytes: int = 64 * GiB
    #: A member that inflates to more than ``ratio`` times its stored size (Keras stores
    #: members uncompressed, 1:1) may declare at most ``compressed_bytes``: enough for the
    #: weights of a large all-zero model recompressed by a zip tool, not for a bomb.
    ratio: int = 100
    compressed_bytes: int = 1 * GiB
    #: Most members in the archive (Keras writes three, plus assets).
    members: int = 10_000
    #: Deepest nesting of lists and objects in ``config.json`` (a ResNet's is 9).
    json_depth: int = 64
    #: Most groups, datasets and links in an HDF5 file, and the deepest group nesting.
    hdf5_objects: int = 200_000
    hdf5_depth: int = 32
    #: A dataset of more than ``dataset_floor`` bytes must store at least 1/``ratio`` of
    #: the bytes it declares (an unwritten or compressed huge dataset is an allocation bomb).
    dataset_floor: int = 64 * MiB
    #: Most bytes of a ``.safetensors`` JSON header.
    header_bytes: int = 100 * MiB

    def __post_init__(self):
        for field in dataclasses.fields(self):
            validation.positive_int(field.name, getattr(self, field.name))


def checked_limits(limits, name="limits"):
    """``limits`` if it is a :class:`Limits`; ``TypeError`` naming the argument otherwise."""
    if not isinstance(limits, Limits):
        raise TypeError(f"`{name}` must be a kresnet.safety.Limits. Received: {name} of type "
                        f"{type(limits).__name__}")
    return limits


LIMITS = Limits()


class UnsafeFileError(ValueError):
    """A file that would run code, read or write other files, or take unbounded work."""


class NotAModelError(ValueError):
    """A file that is not a model file of the kind asked for (or is damaged)."""


#: What a refusal of the allow-list adds: the one check that ``trusted=True`` lifts.
TRUST_HINT = ("Load it with kresnet.load(path, trusted=True) only if you trust whoever made "
              "the file.")
#: What every other refusal adds.
NEVER_HINT = "No file that Keras writes has this, and trusted=True does not lift this check."


def _refuse(path, where, why, hint=NEVER_HINT):
    raise UnsafeFileError(f"Refusing to load {path!r}: {where}: {why}. {hint}")


# ---------------------------------------------------------------------------------------
# The archive
# ---------------------------------------------------------------------------------------

def member_problem(name: str) -> Optional[str]:
    """Why a zip member name is not one Keras writes, or ``None`` if it is.

    >>> member_problem("config.json") is None, member_problem("assets/vocab.txt") is None
    (True, True)
    >>> member_problem("assets/../../x")
    "it has a '..' part (path traversal)"
    """
    if "\0" in name:
        return "it holds a NUL character"
    if "\\" in name:
        return "it holds a backslash (a Windows path)"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "it is an absolute path"
    parts = name.split("/")
    if ".." in parts:
        return "it has a '..' part (path traversal)"
    if name in (CONFIG, METADATA, WEIGHTS):
        return None
    if not name.startswith(ASSETS):
        return (f"Keras writes only {CONFIG}, {METADATA}, {WEIGHTS} and {ASSETS}... "
                "members")
    inner = parts[1:-1] if name.endswith("/") else parts[1:]
    if any(part in ("", ".") for part in inner):
        return "it has an empty or '.' part"
    return None


def _size_problem(info, limits):
    if info.file_size > limits.member_bytes:
        return f"it declares {info.file_size:,} bytes, over the limit of {limits.member_bytes:,}"
    cap = {CONFIG: limits.config_bytes, METADATA: limits.metadata_bytes}.get(info.filename)
    if cap is not None and info.file_size > cap:
        return (f"it declares {info.file_size:,} bytes, over the limit of {cap:,} for "
                f"{info.filename}")
    if info.file_size > limits.ratio * max(info.compress_size, 1) and \
            info.file_size > limits.compressed_bytes:
        return (f"it inflates {info.compress_size:,} stored bytes to {info.file_size:,} "
                f"(over {limits.ratio}:1 and over {limits.compressed_bytes:,} bytes): a zip bomb")
    return None


def _archive_problem(path, archive, limits):
    """``(member, why)`` for the first member that breaks the rules, from the zip directory
    alone (nothing inflated), or ``None``."""
    infos = archive.infolist()
    if len(infos) > limits.members:
        return "the archive", f"it has {len(infos):,} members, over the limit of {limits.members:,}"
    seen = set()
    total = 0
    for info in infos:
        # orig_filename: zipfile cuts ``filename`` at a NUL, hiding it.
        why = member_problem(info.orig_filename)
        if why is None and info.filename in seen:
            why = "the name appears twice (a second member would replace the first)"
        if why is None and info.flag_bits & 0x1:
            why = "it is encrypted"
        if why is None:
            why = _size_problem(info, limits)
        if why is not None:
            return f"member {info.orig_filename!r}", why
        seen.add(info.filename)
        total += info.file_size
    if total > limits.total_bytes:
        return "the archive", (f"its members declare {total:,} bytes together, over the limit "
                               f"of {limits.total_bytes:,}")
    return None


def _open_zip(path):
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            head = file.read(64)
        if head.startswith(b"PK"):
            raise NotAModelError(f"{path!r} is truncated or damaged: it starts like a .keras "
                                 "zip archive but its end (the zip directory) is missing.")
        shown = head[:16]
        kind = " (it looks like an HTML page)" if b"<html" in head.lower() or \
            head.lstrip().lower().startswith(b"<!doctype") else ""
        raise NotAModelError(f"{path!r} is not a .keras file (a .keras file is a zip "
                             f"archive; this file starts with {shown!r}){kind}.")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        raise NotAModelError(f"{path!r} is truncated or damaged: {error}") from error


def _json_depth(value):
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in
                         (node.values() if isinstance(node, dict) else node))
    return deepest


def _parse_json(path, member, data, limits):
    try:
        value = json.loads(data)
    except RecursionError:
        _refuse(path, f"member {member!r}", "its JSON is nested too deeply to parse (a JSON "
                f"bomb); the limit is {limits.json_depth} levels")
    except (UnicodeDecodeError, ValueError) as error:
        raise NotAModelError(f"{path!r} is damaged: its {member} is not valid JSON "
                             f"({error}).") from error
    depth = _json_depth(value)
    if depth > limits.json_depth:
        _refuse(path, f"member {member!r}", f"its JSON is nested {depth} levels deep, over "
                f"the limit of {limits.json_depth} (a JSON bomb)")
    return value


@dataclasses.dataclass
class KerasFile:
    """What :func:`check_keras_file` read: the parsed ``config.json`` and ``metadata.json``
    and the weight shapes of ``model.weights.h5`` (name -> shape)."""

    path: str
    config: dict
    metadata: dict
    weight_shapes: dict


def check_keras_file(path: str, limits: Limits = LIMITS, *, objects: bool = True) -> KerasFile:
    """Check the ``.keras`` file ``path`` before Keras reads it; return what was read.

    Raises :class:`NotAModelError` for a file that is no complete ``.keras`` archive and
    :class:`UnsafeFileError` for one that breaks a rule: a member name Keras does not
    write, a size over ``limits``, JSON nested too deeply, an object that is not one of
    Keras' own (with ``objects=True``, the default; see :func:`config_problem`), or HDF5
    links and storage that reach outside the file (:func:`check_hdf5`).

    >>> import os, tempfile, keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> path = os.path.join(tempfile.mkdtemp(), "dense.keras")
    >>> model.save(path)
    >>> check_keras_file(path).weight_shapes
    {'layers/dense/vars/0': (3, 2), 'layers/dense/vars/1': (2,)}
    """
    _check_file(path)
    with _open_zip(path) as archive:
        if CONFIG not in archive.NameToInfo:
            raise NotAModelError(f"{path!r} is a zip archive but not a .keras model file: it "
                                 f"has no {CONFIG}.")
        problem = _archive_problem(path, archive, limits)
        if problem is not None:
            _refuse(path, *problem)
        infos = {info.filename: info for info in archive.infolist()}
        try:
            # Whole reads are bounded: the declared sizes were held against the limits, and
            # zipfile returns no more than a member declares (checking its CRC at the end).
            config = _parse_json(path, CONFIG, archive.read(infos[CONFIG]), limits)
            metadata = {}
            if METADATA in infos:
                metadata = _parse_json(path, METADATA, archive.read(infos[METADATA]), limits)
        except zipfile.BadZipFile as error:
            if "CRC" in str(error):
                raise NotAModelError(f"{path!r} is damaged: member fails its checksum "
                                     f"({error}).") from error
            raise NotAModelError(f"{path!r} is truncated or damaged: {error}") from error
        except (EOFError, OSError, zlib.error, NotImplementedError) as error:
            raise NotAModelError(f"{path!r} is truncated or damaged: {error}") from error
        if not isinstance(config, dict) or "class_name" not in config:
            raise NotAModelError(f"{path!r} is not a .keras model file: its {CONFIG} "
                                 "describes no Keras object.")
        if objects:
            problem = config_problem(config)
            if problem is not None:
                _refuse(path, *problem, hint=TRUST_HINT)
        shapes = {}
        if WEIGHTS in infos:
            with _member_file(path, archive, infos[WEIGHTS]) as weights:
                shapes = check_hdf5(weights, limits, name=path, member=WEIGHTS)
    return KerasFile(path, config, metadata if isinstance(metadata, dict) else {}, shapes)


def _check_file(path):
    """The checks that need no zip reader: a missing path, a folder, an empty or zero-filled
    file, an HDF5 file given for a ``.keras`` one."""
    if not os.path.lexists(path):
        raise NotAModelError(f"No file at {path!r}: `path` must be an existing .keras "
                             "file.")
    if os.path.isdir(path):
        raise NotAModelError(f"{path!r} is a folder, not a .keras file.")
    if not os.path.isfile(path):
        raise NotAModelError(f"{path!r} is not a regular file (a broken link, a device "
                             "or a pipe), so it cannot be a .keras file.")
    size = os.path.getsize(path)
    if size == 0:
        raise NotAModelError(f"{path!r} is empty (0 bytes): not a .keras file. It may "
                             "be what is left of an interrupted copy or save.")
    with open(path, "rb") as file:
        head = file.read(8)
        zero_filled = not head.strip(b"\0") and _only_zeros(file)
    if zero_filled:
        raise NotAModelError(f"{path!r} holds only zero bytes ({size} of them): not a "
                             ".keras file. It may be a preallocated file whose writing "
                             "never happened.")
    if head == HDF5_SIGNATURE:
        raise NotAModelError(f"{path!r} is an HDF5 file (.h5 or .weights.h5), not a "
                             ".keras model file. Load weights into a model with "
                             "kresnet.load_weights(model, path).")


def _only_zeros(file, chunk=1 << 20):
    while True:
        block = file.read(chunk)
        if not block:
            return True
        if block.strip(b"\0"):
            return False


class _Window:
    """A read-only file object over ``size`` bytes of ``file`` from ``start``: a stored
    (uncompressed) member, which h5py can then read without anything being copied."""

    def __init__(self, file, start, size):
        self._file, self._start, self._size, self._position = file, start, size, 0

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._position, 2: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        return self._position

    def tell(self):
        return self._position

    def readinto(self, buffer):
        view = memoryview(buffer)
        count = min(len(view), self._size - self._position)
        self._file.seek(self._start + self._position)
        got = self._file.readinto(view[:count]) if count else 0
        self._position += got
        return got

    def read(self, size=-1):
        count = self._size - self._position if size is None or size < 0 else size
        buffer = bytearray(min(count, self._size - self._position))
        return bytes(buffer[:self.readinto(buffer)])

    def readable(self):
        return True

    def seekable(self):
        return True


class _member_file:
    """The weights member as a seekable file: a window on the archive when it is stored,
    else inflated (bounded by its checked declared size) into a temporary file."""

    def __init__(self, path, archive, info):
        self._path, self._archive, self._info = path, archive, info
        self._files = []

    def __enter__(self):
        info = self._info
        outer = open(self._path, "rb")
        self._files.append(outer)
        if info.compress_type == zipfile.ZIP_STORED:
            outer.seek(info.header_offset)
            header = outer.read(_ZIP_LOCAL_HEADER.size)
            fields = _ZIP_LOCAL_HEADER.unpack(header)
            name_length, extra_length = fields[-2], fields[-1]
            name = outer.read(name_length)
            if fields[0] != b"PK\x03\x04" or name.decode("utf-8", "replace") != info.filename:
                raise UnsafeFileError(f"Refusing to load {self._path!r}: member {info.filename!r}: "
                                      "its local header names another member")
            start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length
            return _Window(outer, start, info.file_size)
        spool = tempfile.TemporaryFile()
        self._files.append(spool)
        with self._archive.open(info) as member:
            while True:
                block = member.read(_CHUNK)
                if not block:
                    break
                spool.write(block)
        spool.seek(0)
        return spool

    def __exit__(self, *exc):
        for file in self._files:
            file.close()


# ---------------------------------------------------------------------------------------
# config.json: the allow-list
# ---------------------------------------------------------------------------------------

#: Built-in Keras layers that run code or read other files when they are loaded.
UNSAFE_LAYERS = {
    "Lambda": "a Lambda layer runs Python code stored in the file",
    "TorchModuleWrapper": "a TorchModuleWrapper unpickles a PyTorch module stored in the file",
    "TFSMLayer": "a TFSMLayer loads a TensorFlow SavedModel from another path",
    "JaxLayer": "a JaxLayer calls Python functions that are not part of Keras",
    "FlaxLayer": "a FlaxLayer calls a Flax module that is not part of Keras",
}
#: Keras' serialisation markers (what ``serialize_keras_object`` writes for tensors, NumPy
#: arrays, bytes, slices, ...); ``__lambda__`` is code and is refused.
MARKERS = ("__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__slice__",
           "__ellipsis__", "__typespec__")
#: Keras modules whose functions a configuration may name.
FUNCTION_MODULES = ("activations", "constraints", "initializers", "losses", "metrics",
                    "optimizers", "regularizers")
#: Layers that read a vocabulary, and the options that may name a file.
_FILE_OPTIONS = ("vocabulary", "idf_weights")
#: The parts of ``keras.src`` whose classes a configuration may name (see
#: :func:`_internal_problem`).
INTERNAL_FAMILIES = ("ops", "layers", "models", "applications")


def _namespaces():
    """module written in a config -> (the namespace to look the class up in, its bases)."""
    import keras  # noqa: PLC0415  (the check of a file needs no model, but needs Keras' classes)

    return {
        "keras.layers": (keras.layers, (keras.layers.Layer,)),
        "keras.initializers": (keras.initializers, (keras.initializers.Initializer,)),
        "keras.regularizers": (keras.regularizers, (keras.regularizers.Regularizer,)),
        "keras.constraints": (keras.constraints, (keras.constraints.Constraint,)),
        "keras.losses": (keras.losses, (keras.losses.Loss,)),
        "keras.metrics": (keras.metrics, (keras.metrics.Metric,)),
        "keras.optimizers": (keras.optimizers, (keras.optimizers.Optimizer,)),
        "keras.optimizers.schedules": (keras.optimizers.schedules,
                                       (keras.optimizers.schedules.LearningRateSchedule,)),
        "keras.dtype_policies": (keras.dtype_policies, (keras.dtype_policies.DTypePolicy,)),
        "keras": (keras, (keras.dtype_policies.DTypePolicy, keras.Model)),
    }


def _function_problem(node, keras):
    name, module = node.get("config"), node.get("module")
    if not isinstance(name, str):
        return f"a function whose name {name!r} is not a string"
    if module == "builtins":
        places = FUNCTION_MODULES
    elif isinstance(module, str) and module.startswith("keras.") and \
            module[len("keras."):] in FUNCTION_MODULES:
        places = (module[len("keras."):],)
    else:
        places = ()
    for place in places:
        found = getattr(getattr(keras, place), name, None)
        if callable(found) and not isinstance(found, type):
            return None
    where = f"module {module!r}" if module not in (None, "builtins") else "no Keras module"
    return (f"function {name!r} is not part of Keras ({where}; only Keras' "
            f"{', '.join(FUNCTION_MODULES)} may be named, not a custom function nor another "
            "of Keras' functions such as keras.utils.get_file)")


def _object_problem(node, namespaces):
    import keras  # noqa: PLC0415

    class_name, module = node.get("class_name"), node.get("module")
    registered = node.get("registered_name")
    if not isinstance(class_name, str):
        return f"its class_name {class_name!r} is not a string"
    if class_name == "__lambda__":
        return "it holds a Python function stored as code in the file"
    if class_name in MARKERS and module is None:
        return None
    if class_name == "function":
        return _function_problem(node, keras)
    if class_name in UNSAFE_LAYERS:
        return UNSAFE_LAYERS[class_name]
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        origin = ", ".join(([f"registered as {registered!r}"] if registered else []) +
                           ([f"module {module!r}"] if module else []))
        return (f"class {class_name!r}{f' ({origin})' if origin else ''} is not part of "
                "Keras (a custom object): building it runs code from outside Keras")
    if module.startswith("keras.src."):
        return _internal_problem(module, class_name, registered, keras)
    if module not in namespaces:
        return (f"{module}.{class_name} is not a Keras layer, initializer, regularizer, "
                "constraint, loss, metric, optimizer or dtype policy (Keras' other callables, "
                "such as keras.utils.get_file or keras.config.enable_unsafe_deserialization, "
                "are refused)")
    namespace, bases = namespaces[module]
    found = getattr(namespace, class_name, None)
    if not (isinstance(found, type) and issubclass(found, bases)):
        return (f"{module}.{class_name} is not a Keras layer, initializer, regularizer, "
                "constraint, loss, metric, optimizer or dtype policy")
    why = _class_problem(found, class_name, registered, keras)
    if why is not None:
        return why
    if module == "keras.layers" and isinstance(node.get("config"), dict):
        for option in _FILE_OPTIONS:
            if isinstance(node["config"].get(option), str):
                return (f"its {option!r} names a file ({node['config'][option]!r}), which "
                        "loading would read into the model")
    return None


def _class_problem(cls, class_name, registered, keras):
    """Why a Keras class found for a config entry is refused: it is (or derives from) a
    layer that runs outside code, or it is named under a custom registered name."""
    for name, why in UNSAFE_LAYERS.items():
        base = getattr(keras.layers, name, None)
        if isinstance(base, type) and issubclass(cls, base):
            return why
    if registered not in (None, class_name):
        return (f"class {class_name!r} is registered as {registered!r}, not as a built-in "
                "Keras class (a custom object)")
    return None


def _internal_problem(module, class_name, registered, keras):
    """Keras writes its own operations (``x + y`` in a functional model is
    ``keras.src.ops.numpy.Add``), models and the layers of keras.applications under their
    source modules. Those are allowed when the module is one Keras has already imported (it
    is never imported here), of those families, and defines the class as an operation."""
    family = module[len("keras.src."):].split(".")[0]
    loaded = sys.modules.get(module)
    found = vars(loaded).get(class_name) if loaded is not None else None
    if family not in INTERNAL_FAMILIES or not (
            isinstance(found, type) and issubclass(found, keras.Operation) and
            found.__module__ == module):
        return (f"{module}.{class_name} is not one of Keras' layers, operations or models "
                f"(of keras.src, only {', '.join(INTERNAL_FAMILIES)} are allowed: utilities, "
                "saving and configuration functions are refused)")
    return _class_problem(found, class_name, registered, keras)


def config_problem(config) -> Optional[tuple]:
    """``(where, why)`` for the first object of a ``.keras`` configuration that is not on
    the allow-list (Keras' own layers, initializers, regularizers, constraints, losses,
    metrics, optimizers, schedules, dtype policies, functions and serialisation markers),
    or ``None`` when every object is.

    >>> config_problem({"module": "keras.utils", "class_name": "get_file", "config": {}})[1][:40]
    'keras.utils.get_file is not a Keras laye'
    """
    return next(config_problems(config), None)


def config_problems(config):
    """Every ``(where, why)`` of :func:`config_problem`, in the order of the file."""
    namespaces = _namespaces()
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
            why = _object_problem(node, namespaces)
            if why is not None:
                yield (f"layer {layer!r}" if layer is not None else
                       f"entry {'.'.join(str(k) for k in keys) or 'top level'!r} of {CONFIG}",
                       why)
        for key, value in reversed(node.items()):
            stack.append((value, layer, (*keys, key)))


# ---------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------

def check_hdf5(file, limits: Limits = LIMITS, *, name: Optional[str] = None,
               member: Optional[str] = None) -> dict:
    """Check an HDF5 file (a path or a seekable file object) without reading its data, and
    return ``{dataset path: shape}``.

    Refused, with :class:`UnsafeFileError`: external links and soft links (they resolve to
    other files or other places), datasets whose bytes live in other files (external
    storage) or come from them (virtual datasets), a dataset over ``limits.dataset_floor``
    that stores less than 1/``limits.ratio`` of what it declares (an allocation bomb), and
    more objects or deeper nesting than ``limits`` allow.

    >>> import os, tempfile, h5py, numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> with h5py.File(path, "w") as f:
    ...     f["layers/dense/vars/0"] = np.zeros((3, 2), "float32")
    >>> check_hdf5(path)
    {'layers/dense/vars/0': (3, 2)}
    """
    import h5py  # noqa: PLC0415

    label = name or (file if isinstance(file, str) else "the HDF5 file")
    inside = f"member {member!r}, " if member else ""
    try:
        handle = h5py.File(file, "r", locking=False) if isinstance(file, str) else \
            h5py.File(file, "r")
    except (OSError, ValueError) as error:
        raise NotAModelError(f"{label!r} is not a readable HDF5 file: {error}") from error
    shapes, count = {}, 0
    with handle:
        stack = [(handle, "", 0)]
        while stack:
            group, prefix, depth = stack.pop()
            if depth > limits.hdf5_depth:
                _refuse(label, f"{inside}group {prefix!r}",
                        f"groups are nested over {limits.hdf5_depth} deep")
            for key in group:
                count += 1
                if count > limits.hdf5_objects:
                    _refuse(label, f"{inside}the HDF5 file",
                            f"it holds over {limits.hdf5_objects:,} objects")
                where = f"{prefix}{key}"
                link = group.get(key, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    _refuse(label, f"{inside}HDF5 entry {where!r}", f"it is an external link to "
                            f"{link.filename!r}, which reading would open")
                if not isinstance(link, h5py.HardLink):
                    _refuse(label, f"{inside}HDF5 entry {where!r}",
                            f"it is a {type(link).__name__} "
                            "(Keras writes only plain groups and datasets)")
                item = group[key]
                if isinstance(item, h5py.Group):
                    stack.append((item, f"{where}/", depth + 1))
                elif isinstance(item, h5py.Dataset):
                    shapes[where] = _dataset_shape(label, f"{inside}HDF5 dataset {where!r}",
                                                   item, limits)
    return shapes


def _dataset_shape(label, where, dataset, limits):
    if dataset.is_virtual:
        _refuse(label, where, "it is a virtual dataset, which reads other "
                "files")
    if dataset.external:
        files = sorted({entry[0] for entry in dataset.external})
        _refuse(label, where, f"its bytes are stored in other files "
                f"({', '.join(map(repr, files))}), which reading would open")
    declared = dataset.size * dataset.dtype.itemsize if dataset.shape is not None else 0
    stored = dataset.id.get_storage_size()
    if declared > limits.dataset_floor and declared > limits.ratio * max(stored, 1):
        _refuse(label, where, f"it declares {declared:,} bytes but stores "
                f"{stored:,} (an allocation bomb)")
    return tuple(dataset.shape) if dataset.shape is not None else ()


# ---------------------------------------------------------------------------------------
# PyTorch weight files
# ---------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
                       "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1",
                       "BOOL": "?"}


def read_safetensors(path: Union[str, os.PathLike], limits: Limits = LIMITS) -> dict:
    """The tensors of a ``.safetensors`` file as NumPy arrays, name -> array, read without
    the ``safetensors`` package. The header's declared size is checked against the file and
    ``limits.header_bytes`` before it is read, and every tensor's offsets against the data.

    >>> import os, tempfile, json, struct, numpy as np
    >>> header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> _ = open(path, "wb").write(struct.pack("<Q", len(header)) + header.encode()
    ...                            + np.ones(2, "<f4").tobytes())
    >>> read_safetensors(path)["w"].tolist()
    [1.0, 1.0]
    """
    import numpy as np  # noqa: PLC0415

    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise NotAModelError(f"{path!r} is not a .safetensors file: it has {size} bytes")
        (length,) = struct.unpack("<Q", head)
        if length > limits.header_bytes or length > size - 8:
            over = "the file" if length > size - 8 else \
                f"the limit of {limits.header_bytes:,}"
            _refuse(path, "its header", f"it declares {length:,} bytes, over {over}")
        try:
            header = json.loads(file.read(length))
        except (RecursionError, UnicodeDecodeError, ValueError) as error:
            raise NotAModelError(f"{path!r} is not a .safetensors file: its header is not "
                                 f"JSON ({error})") from error
        if not isinstance(header, dict):
            raise NotAModelError(f"{path!r} is not a .safetensors file: its header is not "
                                 "an object")
        data_size = size - 8 - length
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            tensors[name] = _safetensor(path, file, 8 + length, data_size, name, entry, np)
    return tensors


def _safetensor(path, file, base, data_size, name, entry, np):
    try:
        dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
        shape = [int(d) for d in entry["shape"]]
        start, end = (int(v) for v in entry["data_offsets"])
    except (KeyError, TypeError, ValueError):
        raise NotAModelError(f"{path!r}: tensor {name!r} has no valid dtype, shape and "
                             "data_offsets") from None
    if dtype == "bfloat16":
        import ml_dtypes  # noqa: PLC0415  (installed with Keras)

        dtype = ml_dtypes.bfloat16
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if min(shape, default=0) < 0 or not 0 <= start <= end <= data_size or \
            end - start != count * dtype.itemsize:
        _refuse(path, f"tensor {name!r}", f"its offsets {start}..{end} do not hold a "
                f"{'x'.join(map(str, shape)) or 'scalar'} {entry['dtype']} tensor inside the "
                f"{data_size:,} bytes of data")
    file.seek(base + start)
    return np.frombuffer(file.read(end - start), dtype=dtype).reshape(shape).copy()


def read_pth(path: Union[str, os.PathLike]) -> dict:
    """A PyTorch checkpoint's tensors as NumPy arrays, name -> array, through
    ``torch.load(weights_only=True)``: a pickle that would import or call anything but
    tensors and containers is refused (:class:`UnsafeFileError`) before it runs.

    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "w.pth")
    >>> torch.save({"fc.weight": torch.ones(2, 3)}, path)
    >>> read_pth(path)["fc.weight"].shape
    (2, 3)
    """
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ImportError("reading .pth files needs PyTorch: pip install \"kresnet[torch]\" "
                          "(or torch); .safetensors files need nothing more") from None
    path = os.fspath(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as error:  # torch raises UnpicklingError for a refused global
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            _refuse(path, "its pickle", "it names Python objects other than tensors and "
                    f"containers, which unpickling would import or call ({error})".split("\n")[0])
        raise NotAModelError(f"{path!r} is not a PyTorch checkpoint: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise NotAModelError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    return {str(k): v.detach().cpu().numpy() for k, v in state.items()
            if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------------------
# inspect
# ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class FileReport:
    """What :func:`inspect` found in a file. ``verdict`` is ``"safe"``, ``"unsafe"`` or
    ``"not a model"``; ``reasons`` says why it is not safe."""

    path: str
    verdict: str
    reasons: list
    model_name: Optional[str] = None
    keras_version: Optional[str] = None
    layers: dict = dataclasses.field(default_factory=dict)
    parameters: Optional[int] = None
    kresnet_names: Optional[bool] = None

    @property
    def exit_code(self) -> int:
        """0 for a safe file, 1 for an unsafe one, 2 for a file that is not a model."""
        return {"safe": 0, "unsafe": 1}.get(self.verdict, 2)

    def __str__(self):
        lines = [f"file: {self.path}", f"verdict: {self.verdict}"]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.model_name is not None:
            lines.append(f"model: {self.model_name}")
        if self.keras_version is not None:
            lines.append(f"saved by Keras {self.keras_version}")
        if self.layers:
            lines.append(f"layers: {sum(self.layers.values())} ("
                         + ", ".join(f"{n} {c}" for c, n in self.layers.items()) + ")")
        if self.parameters is not None:
            lines.append(f"parameters (from the weight shapes): {self.parameters:,}")
        if self.kresnet_names is not None:
            lines.append("layer names follow kresnet's scheme: "
                         + ("yes" if self.kresnet_names else "no"))
        return "\n".join(lines)


def _layer_list(config):
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) \
        else []


def inspect(path: Union[str, os.PathLike], limits: Limits = LIMITS) -> FileReport:
    """Report what the ``.keras`` file ``path`` holds, without building or running anything:
    model name, layers by class, parameters counted from the weight shapes, the Keras
    version that saved it, whether its layer names follow kresnet's scheme, and the safety
    verdict with reasons (every object that fails the allow-list, not only the first).

    >>> import os, tempfile, kresnet
    >>> path = kresnet.save(kresnet.create_resnet((32, 32, 3), 3, blocks=(1,)),
    ...                     os.path.join(tempfile.mkdtemp(), "tiny.keras"))
    >>> report = inspect(path)
    >>> report.verdict, report.model_name, report.kresnet_names, report.exit_code
    ('safe', 'resnet5', True, 0)
    """
    path = validation.path(path)
    checked_limits(limits)
    if not os.path.isfile(path):
        return FileReport(path, "not a model", [f"no file at {path!r}"])
    try:
        read = check_keras_file(path, limits, objects=False)
    except UnsafeFileError as error:
        return FileReport(path, "unsafe", [str(error).split(". " + NEVER_HINT)[0]])
    except NotAModelError as error:
        return FileReport(path, "not a model", [str(error)])
    reasons = [f"{where}: {why}" for where, why in
               itertools.islice(config_problems(read.config), 20)]
    layers = _layer_list(read.config)
    names = [layer["config"].get("name") for layer in layers
             if isinstance(layer.get("config"), dict)]
    names = [name for name in names if isinstance(name, str)]
    found = naming.prefixes(names)
    inner = read.config.get("config")
    model_name = inner.get("name") if isinstance(inner, dict) else None
    parameters = sum(_product(shape) for key, shape in read.weight_shapes.items()
                     if key.startswith("layers/"))
    return FileReport(
        path, "unsafe" if reasons else "safe", reasons,
        model_name=model_name if isinstance(model_name, str) else None,
        keras_version=read.metadata.get("keras_version"),
        layers=dict(Counter(str(layer.get("class_name")) for layer in layers).most_common()),
        parameters=parameters,
        kresnet_names=bool(found) and all(
            any(naming.parse(name, prefix) is not None for prefix in found) for name in names))


def _product(shape):
    total = 1
    for size in shape:
        total *= size
    return total

"""Make crafted model files, one per published attack on Keras model files, and check that
kresnet refuses each one by its own checks.

Usage:
    python scripts/attack_corpus.py OUTDIR            # make the corpus, then check it
    python scripts/attack_corpus.py OUTDIR --make     # only make it

Each file is made the way an attacker would make it: a real ``.keras`` file of a small model
whose ``config.json``, members or ``model.weights.h5`` are then edited. ``check`` loads each
with ``kresnet.load`` (untrusted, the default) and ``kresnet.inspect``, and prints one line
per file: the family, whether the refusal is kresnet's own (its message), the inspect
verdict, and the seconds and memory the refusal took. It exits 1 if any file got through.
tests/test_security.py runs the same corpus; run this script under the oldest Keras that
setup.cfg allows to see that the refusals do not depend on Keras' own fixes.

The families (docs/security.md): Lambda code (CVE-2024-3660), classes of other modules
(CVE-2025-1550), Keras' own functions named as objects (keras.utils.get_file, CVE-2025-8747;
keras.config.enable_unsafe_deserialization, CVE-2025-9906), lookup layers whose vocabulary
names a file (CVE-2025-12058), path traversal in member names (CVE-2025-12060,
GHSA-hqp4-2352-xf5r), HDF5 external links, external storage and virtual datasets
(CVE-2026-1669, GHSA-26c4-7vv6-867j), allocation bombs (CVE-2026-0897), zip bombs in every
member, a JSON bomb, and a web page saved as a model.
"""

import argparse
import functools
import io
import json
import os
import struct
import sys
import time
import tracemalloc
import zipfile
import zlib

BOMB_BYTES = 2 * 10**9  # what a 2 MB file inflates to
_BLOCK = 1 << 20


class Bomb:
    """A member that inflates to ``size`` zero bytes from a deflate stream of about
    ``size / 1000`` bytes, with its true CRC: what a real zip bomb is."""

    def __init__(self, size=BOMB_BYTES):
        self.size = size


@functools.lru_cache(maxsize=None)
def _zero_stream(size):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush the compressor starts afresh, so each 1 MiB block of zeros
    # compresses to the same bytes and the stream is that block repeated.
    block = compressor.compress(bytes(_BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(size, _BLOCK)
    tail = compressor.compress(bytes(rest)) + compressor.flush()
    crc, zeros = 0, bytes(_BLOCK)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(bytes(rest), crc)
    return block * count + tail, crc


def write_zip(path, members):
    """Write a zip archive member by member, as given: names are not cleaned, duplicates are
    kept, and a :class:`Bomb` is written deflated with its declared size. ``members`` is a
    list of ``(name, bytes or Bomb)``."""
    out, directory = io.BytesIO(), []
    for name, data in members:
        raw = name.encode("utf-8")
        if isinstance(data, Bomb):
            stored, crc = _zero_stream(data.size)
            method, size = zipfile.ZIP_DEFLATED, data.size
        else:
            stored, crc, method, size = data, zlib.crc32(data), zipfile.ZIP_STORED, len(data)
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0x800, method, 0, 0, crc,
                              len(stored), size, len(raw), 0) + raw)
        out.write(stored)
        directory.append(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0x800, method, 0,
                                     0, crc, len(stored), size, len(raw), 0, 0, 0, 0, 0,
                                     offset) + raw)
    start = out.tell()
    for entry in directory:
        out.write(entry)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(directory), len(directory),
                          out.tell() - start, start, 0))
    with open(path, "wb") as file:
        file.write(out.getvalue())
    return str(path)


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _replace(path, good, name, data):
    """``good`` with member ``name`` replaced by ``data`` (bytes or a Bomb)."""
    return write_zip(path, [(n, data if n == name else d) for n, d in _members(good)])


def _edit_config(path, good, edit):
    config = json.loads(dict(_members(good))["config.json"])
    edit(config)
    return _replace(path, good, "config.json", json.dumps(config).encode())


def _layers(config):
    return config["config"]["layers"]


def _layer(config, name):
    return next(layer for layer in _layers(config) if layer["config"]["name"] == name)


def _good_model(folder):
    """A real small ``.keras`` file (Conv2D, Dense, StringLookup-free) and its path."""
    import keras  # noqa: PLC0415

    inputs = keras.Input((8, 8, 3), name="input")
    x = keras.layers.Conv2D(4, 3, name="conv1")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="fc2")(x)
    model = keras.Model(inputs, outputs, name="victim")
    path = os.path.join(folder, "good.keras")
    model.save(path)
    return path


def _lookup_model(folder):
    import keras  # noqa: PLC0415

    inputs = keras.Input((1,), dtype="string", name="words")
    outputs = keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")(inputs)
    path = os.path.join(folder, "lookup-good.keras")
    keras.Model(inputs, outputs, name="lookup").save(path)
    return path


def _lambda_model(folder):
    import keras  # noqa: PLC0415

    inputs = keras.Input((2,), name="input")
    outputs = keras.layers.Lambda(lambda t: t * 2, name="double")(inputs)
    path = os.path.join(folder, "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    return path


def _weights_with(folder, good, name, build):
    """``good`` whose ``model.weights.h5`` is rebuilt by ``build(h5py_file)`` on top of a
    copy of the real weights."""
    import h5py  # noqa: PLC0415

    h5_path = os.path.join(folder, f"{name}.weights.h5")
    with open(h5_path, "wb") as file:
        file.write(dict(_members(good))["model.weights.h5"])
    with h5py.File(h5_path, "a") as file:
        build(file)
    with open(h5_path, "rb") as file:
        data = file.read()
    return _replace(os.path.join(folder, f"{name}.keras"), good, "model.weights.h5", data)


def _secret_h5(folder):
    """An HDF5 file elsewhere on the host, that an attacker wants read into a model."""
    import h5py  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    path = os.path.join(folder, "outside", "secret.h5")
    if not os.path.exists(path):
        with h5py.File(path, "w") as file:
            file["data"] = np.arange(3 * 3 * 3 * 4, dtype="float32").reshape(3, 3, 3, 4)
    return path




def _kernel_path(file):
    """The conv kernel's dataset path in a Keras 3 weights file (its layer folder is named by
    class, as Keras writes it)."""
    found = []
    file.visit(lambda name: found.append(name) if name.endswith("vars/0") else None)
    return found[0]


def _external_link(folder, good):
    secret = _secret_h5(folder)

    def build(file):
        kernel = _kernel_path(file)
        del file[kernel]
        import h5py  # noqa: PLC0415

        file[kernel] = h5py.ExternalLink(secret, "/data")
    return _weights_with(folder, good, "h5-external-link", build)


def _soft_link(folder, good):
    def build(file):
        import h5py  # noqa: PLC0415

        kernel = _kernel_path(file)
        file["stash"] = file[kernel][()]
        del file[kernel]
        file[kernel] = h5py.SoftLink("/stash")
    return _weights_with(folder, good, "h5-soft-link", build)


def _external_storage(folder, good):
    secret = os.path.join(folder, "outside", "secret.bin")
    with open(secret, "wb") as file:
        file.write(bytes(range(256)) * 4)

    def build(file):
        kernel = _kernel_path(file)
        shape = file[kernel].shape
        del file[kernel]
        file.create_dataset(kernel, shape=shape, dtype="float32",
                            external=[(secret, 0, 4 * int(__import__("numpy").prod(shape)))])
    return _weights_with(folder, good, "h5-external-storage", build)


def _virtual(folder, good):
    secret = _secret_h5(folder)

    def build(file):
        import h5py  # noqa: PLC0415

        kernel = _kernel_path(file)
        shape = file[kernel].shape
        del file[kernel]
        layout = h5py.VirtualLayout(shape=shape, dtype="float32")
        layout[...] = h5py.VirtualSource(secret, "data", shape=shape)
        file.create_virtual_dataset(kernel, layout)
    return _weights_with(folder, good, "h5-virtual-dataset", build)


def _allocation_bomb(folder, good):
    def build(file):
        kernel = _kernel_path(file)
        del file[kernel]
        # 2 GB declared, nothing stored: reading it allocates the 2 GB.
        file.create_dataset(kernel, shape=(BOMB_BYTES // 4,), dtype="float32",
                            chunks=(1 << 18,))
    return _weights_with(folder, good, "h5-allocation-bomb", build)


def _get_file_config(origin, folder, as_function):
    target = {"fname": "payload.txt", "origin": origin,
              "cache_dir": os.path.join(folder, "outside", "downloads")}
    if as_function:
        return {"module": "keras.utils", "class_name": "function", "config": "get_file",
                "registered_name": "get_file"}
    return {"module": "keras.utils", "class_name": "get_file", "config": target,
            "registered_name": None}


def make(folder, origin="http://127.0.0.1:9/payload.txt"):
    """Write the corpus into ``folder``; return {case: (path, what the refusal says, the
    inspect verdict)}. ``origin``: the address the get_file payloads download from."""
    os.makedirs(os.path.join(folder, "outside"), exist_ok=True)
    good = _good_model(folder)
    lookup = _lookup_model(folder)
    cases = {}

    def case(name, path, message, verdict="unsafe"):
        cases[name] = (path, message, verdict)

    def at(name):
        return os.path.join(folder, f"{name}.keras")

    # Code in the file (CVE-2024-3660).
    case("lambda-layer", _lambda_model(folder), "a Lambda layer runs Python code")

    def lambda_activation(config):
        _layer(config, "fc2")["config"]["activation"] = {
            "class_name": "__lambda__", "config": {"code": "ZGVmIGYoeCk6IHJldHVybiB4",
                                                   "defaults": None, "closure": None}}
    case("lambda-in-activation", _edit_config(at("lambda-in-activation"), good,
                                              lambda_activation),
         "layer 'fc2': it holds a Python function stored as code")

    # Classes and functions of other modules (CVE-2025-1550).
    def foreign_class(config):
        _layer(config, "pool").update(module="os", class_name="system", registered_name=None)
    case("foreign-module", _edit_config(at("foreign-module"), good, foreign_class),
         "layer 'pool': class 'system' (module 'os') is not part of Keras")

    def foreign_function(config):
        _layer(config, "fc2")["config"]["activation"] = {
            "module": "builtins", "class_name": "function", "config": "exec",
            "registered_name": None}
    case("builtin-function", _edit_config(at("builtin-function"), good, foreign_function),
         "layer 'fc2': function 'exec' is not part of Keras")

    def registered_name(config):
        _layer(config, "conv1")["registered_name"] = "evil>Conv2D"
    case("registered-name", _edit_config(at("registered-name"), good, registered_name),
         "is registered as 'evil>Conv2D'")

    # Keras' own functions named as objects (CVE-2025-8747, CVE-2025-9906).
    def get_file_object(config):
        _layer(config, "conv1")["config"]["kernel_initializer"] = _get_file_config(
            origin, folder, as_function=False)
    case("get-file", _edit_config(at("get-file"), good, get_file_object),
         "layer 'conv1': keras.utils.get_file is not a Keras layer")

    def get_file_function(config):
        _layer(config, "fc2")["config"]["activation"] = _get_file_config(
            origin, folder, as_function=True)
    case("get-file-function", _edit_config(at("get-file-function"), good, get_file_function),
         "layer 'fc2': function 'get_file' is not part of Keras")

    def get_file_internal(config):
        _layer(config, "conv1")["config"]["kernel_initializer"] = {
            **_get_file_config(origin, folder, as_function=False),
            "module": "keras.src.utils.file_utils"}
    case("get-file-internal", _edit_config(at("get-file-internal"), good, get_file_internal),
         "keras.src.utils.file_utils.get_file is not one of Keras' layers")

    def unsafe_switch(config):
        _layers(config).insert(1, {"module": "keras.config",
                                   "class_name": "enable_unsafe_deserialization",
                                   "config": {}, "registered_name": None,
                                   "name": "switch", "inbound_nodes": []})
    case("enable-unsafe", _edit_config(at("enable-unsafe"), good, unsafe_switch),
         "keras.config.enable_unsafe_deserialization is not a Keras layer")

    # A vocabulary that names a file on the host (CVE-2025-12058).
    secret_text = os.path.join(folder, "outside", "passwords.txt")
    with open(secret_text, "w", encoding="utf-8") as file:
        file.write("hunter2\nswordfish\n")

    def vocabulary_file(config):
        _layer(config, "lookup")["config"]["vocabulary"] = secret_text
    case("vocabulary-file", _edit_config(at("vocabulary-file"), lookup, vocabulary_file),
         "layer 'lookup': its 'vocabulary' names a file")

    # Member names (CVE-2025-12060, GHSA-hqp4-2352-xf5r).
    members = _members(good)
    traversal = {
        "member-dotdot": ("../escaped.txt", "'..' part (path traversal)"),
        "member-assets-dotdot": ("assets/../../escaped.txt", "'..' part (path traversal)"),
        "member-absolute": (os.path.join(folder, "outside", "abs.txt"), "absolute path"),
        "member-backslash": ("assets\\..\\..\\escaped.txt", "backslash"),
        "member-nul": ("assets/x\0.txt", "NUL character"),
        "member-unknown": ("run.sh", "Keras writes only"),
    }
    for name, (member, message) in traversal.items():
        case(name, write_zip(at(name), members + [(member, b"owned\n")]), message)
    config_bytes = dict(members)["config.json"]
    case("member-duplicate", write_zip(at("member-duplicate"), members + [
        ("config.json", config_bytes.replace(b'"victim"', b'"other"'))]),
         "member 'config.json': the name appears twice")

    # HDF5 weights that read other files (CVE-2026-1669, GHSA-26c4-7vv6-867j) or allocate
    # what they do not store (CVE-2026-0897).
    case("h5-external-link", _external_link(folder, good), "it is an external link to")
    case("h5-soft-link", _soft_link(folder, good), "it is a SoftLink")
    case("h5-external-storage", _external_storage(folder, good),
         "its bytes are stored in other files")
    case("h5-virtual-dataset", _virtual(folder, good), "it is a virtual dataset")
    case("h5-allocation-bomb", _allocation_bomb(folder, good), "an allocation bomb")

    # Zip bombs, one per member, and a JSON bomb.
    case("bomb-config", _replace(at("bomb-config"), good, "config.json", Bomb()),
         "member 'config.json': it declares 2,000,000,000 bytes, over the limit")
    case("bomb-metadata", _replace(at("bomb-metadata"), good, "metadata.json", Bomb()),
         "member 'metadata.json': it declares 2,000,000,000 bytes, over the limit")
    case("bomb-weights", _replace(at("bomb-weights"), good, "model.weights.h5", Bomb()),
         "member 'model.weights.h5': it inflates")
    case("bomb-asset", write_zip(at("bomb-asset"), members + [("assets/blob.bin", Bomb())]),
         "member 'assets/blob.bin': it inflates")
    deep = b"[" * 100_000 + b"]" * 100_000
    case("json-bomb", _replace(at("json-bomb"), good, "config.json", deep),
         "nested too deeply to parse")
    nested = {"class_name": "Functional", "config": {}}
    node = nested["config"]
    for _ in range(200):
        node["x"] = [{}]
        node = node["x"][0]
    case("json-deep", _replace(at("json-deep"), good, "config.json",
                               json.dumps(nested).encode()),
         "nested 402 levels deep, over the limit of 64")

    # Not a model at all.
    html = os.path.join(folder, "download.keras")
    with open(html, "wb") as file:
        file.write(b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head>"
                   b"<body>Please sign in to download this model.</body></html>\n")
    case("html-page", html, "it looks like an HTML page", verdict="not a model")
    return cases


def _outside_files(folder):
    found = set()
    for root, _, files in os.walk(os.path.join(folder, "outside")):
        found.update(os.path.join(root, name) for name in files)
    return found


def check(folder, cases):
    """Load and inspect every case; return the rows ``(case, refused by kresnet, message,
    verdict, seconds, peak MB)``."""
    import kresnet  # noqa: PLC0415

    rows = []
    for name, (path, expected, verdict) in cases.items():
        tracemalloc.start()
        start = time.perf_counter()
        try:
            kresnet.load(path)
            message = None
        except ValueError as error:
            message = str(error)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        ours = message is not None and expected in message and repr(path) in message
        rows.append((name, ours, message, kresnet.inspect(path).verdict == verdict, seconds,
                     peak))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--make", action="store_true", help="only make the corpus")
    args = parser.parse_args(argv)
    os.makedirs(args.folder, exist_ok=True)
    folder = os.path.abspath(args.folder)
    cases = make(folder)
    if args.make:
        print(f"{len(cases)} files in {folder}")
        return 0
    import keras  # noqa: PLC0415

    before = _outside_files(folder)
    os.chdir(folder)
    rows = check(folder, cases)
    print(f"Keras {keras.__version__}, {len(rows)} crafted files")
    print("| file | refused by kresnet | inspect | seconds | peak MB |")
    print("|---|---|---|---:|---:|")
    for name, ours, message, inspected, seconds, peak in rows:
        print(f"| {name} | {'yes' if ours else 'NO: ' + str(message)[:80]} | "
              f"{'ok' if inspected else 'WRONG'} | {seconds:.3f} | {peak:.1f} |")
    written = _outside_files(folder) - before
    print(f"files written outside: {sorted(written) or 'none'}")
    return 0 if all(r[1] and r[3] for r in rows) and not written else 1


if __name__ == "__main__":
    sys.exit(main())

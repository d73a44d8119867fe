"""From a name of :data:`kresnet.WEIGHTS` to weights in a model: download, check, convert,
cache.

The file is downloaded once with ``keras.utils.get_file`` into Keras' cache
(``~/.keras/kresnet``, or ``$KRESNET_CACHE/kresnet``) and checked against its published hash,
then converted once (torch's layout to kresnet's, :mod:`kresnet.torch_layout`) into an HDF5
file of kresnet layer names in ``converted/`` beside it; every later load reads that file
(checked as every HDF5 file kresnet opens) and moves its arrays by name.
"""

import hashlib
import os
import tempfile
import warnings

import h5py
import keras
import numpy as np
from keras.src.backend.config import keras_home  # the folder keras.utils.get_file uses

from kresnet import naming, safety
from kresnet.builder import build_undrawn
from kresnet.registry import Weights
from kresnet.torch_layout import adapt_input_channels, fill, state_arrays
from kresnet.weights import _Arrays, _legacy_h5_weights, transfer_weights


def cache_dir() -> str:
    """The folder of the downloads and converted files: ``$KRESNET_CACHE/kresnet`` if that
    variable is set, else ``kresnet`` in Keras' own cache (``$KERAS_HOME``, ``~/.keras``)."""
    base = os.environ.get("KRESNET_CACHE")
    if not base:
        base = keras_home()
    return os.path.join(os.path.expanduser(base), "kresnet")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(entry: Weights) -> str:
    """The local path of ``entry``'s file, downloaded once with ``keras.utils.get_file``
    and checked against its published hash (a file that fails the check is deleted)."""
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)  # else get_file falls back to /tmp/.keras
    full_hash = entry.file_hash if entry.hash_kind in ("md5", "sha256") else None
    cached = os.path.join(folder, entry.file_name)
    checked = False  # a cached file whose prefix already matched needs no second hash
    if entry.hash_kind == "sha256-prefix" and os.path.isfile(cached):
        checked = _sha256(cached).startswith(entry.file_hash)
        if not checked:
            os.remove(cached)  # a partial or stale file: fetch it again, as get_file does
    try:
        path = keras.utils.get_file(entry.file_name, entry.url, cache_dir=os.path.dirname(folder),
                                    cache_subdir=os.path.basename(folder), file_hash=full_hash)
    except Exception as error:  # noqa: BLE001 - every failure gets the same advice
        raise RuntimeError(
            f"Could not download the weights {entry.name} from {entry.url} ({error}). "
            f"Without internet, fetch the file elsewhere and put it at "
            f"{os.path.join(folder, entry.file_name)}.") from error
    if entry.hash_kind == "sha256-prefix" and not checked:
        digest = _sha256(path)
        if not digest.startswith(entry.file_hash):
            os.remove(path)
            raise ValueError(f"The file of {entry.name} has SHA-256 {digest}, which does not "
                             f"start with the published {entry.file_hash}; it was deleted.")
    elif entry.file_hash is None:
        warnings.warn(f"No hash of {entry.name}'s file is published to kresnet; its "
                      f"SHA-256 is {_sha256(path)}, and it was checked for its layout only "
                      "(every key and shape of the architecture).", stacklevel=3)
    return path


def converted_path(entry: Weights) -> str:
    """Where the converted weights of a torch ``entry`` are cached."""
    return os.path.join(cache_dir(), "converted", f"{entry.name}.h5")


def _write_named(model, path, entry):
    """``model``'s weights in an HDF5 file of layer names (Keras 2's layout, which
    :func:`kresnet.load_weights` reads), written whole or not at all."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".h5.partial", dir=folder)
    os.close(handle)
    try:
        with h5py.File(partial, "w") as file:
            layers = [layer for layer in model.layers if layer.weights]
            file.attrs["layer_names"] = np.array([layer.name.encode() for layer in layers])
            file.attrs["kresnet_weights"] = entry.name
            for layer in layers:
                group = file.create_group(layer.name)
                group.attrs["weight_names"] = np.array(
                    [str(i).encode() for i in range(len(layer.weights))])
                for i, weight in enumerate(layer.weights):
                    group.create_dataset(str(i), data=keras.ops.convert_to_numpy(weight))
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def convert(entry: Weights) -> str:
    """The cached, converted weights of a torch ``entry``: downloaded and converted on the
    first call, read from the cache afterwards."""
    path = converted_path(entry)
    if not os.path.isfile(path):
        config = entry.network
        model = build_undrawn(config)  # every weight comes from the file
        source = download(entry)
        try:
            fill(model, state_arrays(source), entry.arch, config)
        except Exception:
            if entry.file_hash is None:  # unverified, and unusable: fetch it again next time
                os.remove(source)
            raise
        _write_named(model, path, entry)
    return path


def read_converted(entry: Weights) -> dict:
    """``{layer name: [arrays]}`` of a converted file, checked before it is read."""
    path = convert(entry)
    safety.check_hdf5(path)
    with h5py.File(path, "r") as file:
        stored = file.attrs.get("kresnet_weights")
    if stored != entry.name:
        raise ValueError(f"{path!r} holds the weights {stored!r}, not {entry.name!r}; "
                         "delete it to convert again.")
    return _legacy_h5_weights(path)


def _adapt_first_conv(model, arrays, prefix):
    """RGB weights' first conv for a model of another channel count (see
    :func:`kresnet.torch_layout.adapt_input_channels`)."""
    for layer in model.layers:
        name = layer.name[len(prefix):]
        if isinstance(layer, keras.layers.Conv2D) and name in arrays:
            kernel, rest = arrays[name][0], arrays[name][1:]
            channels = int(layer.kernel.shape[2])
            adapted = adapt_input_channels(np.transpose(kernel, (3, 2, 0, 1)), channels, name)
            arrays[name] = [np.transpose(adapted, (2, 3, 1, 0)), *rest]
            return


def load_into(model: keras.Model, entry: Weights, prefix: str = "") -> dict:
    """Load a torch ``entry``'s converted weights into ``model`` (built as
    :func:`kresnet.build` builds it for ``entry``) by layer name; returns
    :func:`kresnet.transfer_weights`' report."""
    arrays = read_converted(entry)
    _adapt_first_conv(model, arrays, prefix)
    mapping = {}
    for layer in model.layers:
        if naming.is_preprocessing(layer.name) or not layer.weights:
            continue
        if naming.parse(layer.name, prefix) is None:
            # Not the ResNet's (layers of the caller's input_tensor): they keep their weights.
            arrays[layer.name] = [keras.ops.convert_to_numpy(w) for w in layer.weights]
        else:
            mapping[layer.name] = layer.name[len(prefix):]
    return transfer_weights(_Arrays(entry.name, arrays), model, mapping, use_all=False)

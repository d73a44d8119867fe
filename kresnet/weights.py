"""Weights apart from building: transfer by layer name, weight-file readers, downloads.

Every transfer matches layers by name, never by position, and refuses (naming the layer)
anything that does not fit, so that a ResNet-50 file cannot silently fill a ResNet-101.
Files may use kresnet's names (``res2a_branch2a``) or keras.applications' ones
(``conv2_block1_1_conv``); :func:`kresnet.naming.keras_applications_names` maps them.
"""

import os
import tempfile
import zipfile
from typing import Mapping, Optional

import h5py
import keras
import numpy as np

from kresnet import inspection, naming, safety, validation
from kresnet.config import ResNetConfig


def _weighted(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def _assign(layer, arrays, source_name):
    """Set ``layer``'s weights from ``arrays``; a missing conv bias is taken as zeros and an
    extra one is accepted only when it is all zeros. Raises ValueError naming both layers."""
    expected = [tuple(w.shape) for w in layer.weights]
    given = [tuple(a.shape) for a in arrays]
    if isinstance(layer, keras.layers.Conv2D) and len(expected) != len(given):
        if len(expected) == 2 and len(given) == 1:
            arrays = [arrays[0], np.zeros(expected[1], arrays[0].dtype)]
        elif len(expected) == 1 and len(given) == 2 and not np.any(arrays[1]):
            arrays = arrays[:1]
        given = [tuple(a.shape) for a in arrays]
    if given != expected:
        raise ValueError(f"Layer {layer.name!r} does not fit the weights of {source_name!r}: "
                         f"it needs shapes {expected}, the source has {given}.")
    layer.set_weights(arrays)


def transfer_weights(source, target, mapping: Optional[Mapping[str, str]] = None, *,
                     skip_mismatch: bool = False, use_all: bool = True) -> dict:
    """Copy weights from ``source`` into ``target`` by layer name.

    ``mapping`` maps target names to source names (default: the same names). Every weighted
    layer of the target must find its source layer, of the same shapes, and every weighted
    layer of the source must be used (unless ``use_all=False``), unless ``skip_mismatch``;
    then what does not fit is skipped and returned. Returns ``{"loaded": [...],
    "skipped": [...], "unused": [...]}``: target names, then source names left over.

    >>> import kresnet
    >>> a = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    >>> b = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    >>> len(transfer_weights(a, b)["loaded"])
    12
    """
    if not isinstance(source, _Arrays):
        validation.keras_model(source, "source")
    validation.keras_model(target, "target")
    validation.boolean("skip_mismatch", skip_mismatch)
    validation.boolean("use_all", use_all)
    if mapping is not None and not (isinstance(mapping, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())):
        raise TypeError("`mapping` must be None or a dict from target to source layer names "
                        f"(strings). Received: mapping={mapping!r}")
    mapping = mapping or {}
    sources, report, used = _weighted(source), {"loaded": [], "skipped": []}, set()
    for name, layer in _weighted(target).items():
        if naming.is_preprocessing(name):
            continue  # fixed constants (include_preprocessing), not trained weights
        source_name = mapping.get(name, name)
        try:
            if source_name not in sources:
                raise ValueError(f"Layer {name!r} of {target.name!r} has no counterpart "
                                 f"{source_name!r} in {source.name!r}.")
            _assign(layer, [np.asarray(w) for w in sources[source_name].weights], source_name)
        except ValueError:
            if not skip_mismatch:
                raise
            report["skipped"].append(name)
            continue
        used.add(source_name)
        report["loaded"].append(name)
    report["unused"] = unused = [n for n in sources if n not in used]
    if unused and use_all and not skip_mismatch:
        raise ValueError(f"{len(unused)} weighted layer(s) of {source.name!r} have no "
                         f"counterpart in {target.name!r}, first {unused[0]!r}.")
    return report


def _legacy_h5_weights(path):
    """``{layer_name: [arrays]}`` of a Keras 2 style ``.h5`` weights or model file."""
    with h5py.File(path, "r") as file:
        group = file["model_weights"] if "model_weights" in file else file
        if "layer_names" not in group.attrs:
            return None
        weights = {}
        for raw in group.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            layer = group[name]
            weight_names = [w.decode() if isinstance(w, bytes) else str(w)
                            for w in layer.attrs.get("weight_names", [])]
            if weight_names:
                weights[name] = [np.asarray(layer[w]) for w in weight_names]
        return weights


class _Arrays:
    """A stand-in source model for :func:`transfer_weights` over plain arrays."""

    def __init__(self, name, weights):
        self.name = name
        self.layers = [_ArrayLayer(n, arrays) for n, arrays in weights.items()]


class _ArrayLayer:
    def __init__(self, name, arrays):
        self.name, self.weights = name, arrays


def keras_mapping(model, prefix: str = "") -> dict:
    """kresnet name -> keras.applications name for every layer of the ResNet with
    ``prefix`` in ``model``, its head included."""
    mapping = naming.keras_applications_names(inspection.stage_labels(model, prefix), prefix)
    head = inspection.head_layer(model, prefix)
    if head is not None:
        mapping[head.name] = naming.KERAS_PREDICTIONS
    return mapping


def _scheme_mapping(model, file_names):
    """Map the model's names to the file's: kresnet's own names, or keras.applications'."""
    ours = set(_weighted(model))
    if ours & set(file_names):
        return {}
    mapping = {}
    for prefix in naming.prefixes(layer.name for layer in model.layers):
        mapping.update(keras_mapping(model, prefix))
    if not set(mapping.values()) & set(file_names):
        raise ValueError("The weights file uses neither kresnet's layer names (res2a_branch2a) "
                         "nor keras.applications' (conv2_block1_1_conv).")
    return mapping


def keras_applications_arguments(model, prefix: str = "") -> dict:
    """The head, pooling and input arguments of the keras.applications function that makes
    the network of the ResNet ``prefix`` in ``model``."""
    head = inspection.head_layer(model, prefix)
    return {"include_top": head is not None, "classes": 1000 if head is None else head.units,
            "classifier_activation": "softmax" if head is None else head.activation,
            "pooling": naming.pooling_of((layer.name for layer in model.layers), prefix),
            "input_shape": tuple(model.input_shape[1:])}


def keras_applications_twin(model):
    """A keras.applications ResNet of the same network as the kresnet ``model`` (random
    weights), or None where keras.applications has no such network."""
    try:
        config = inspection.config_of(model)
    except ValueError:
        return None
    function = config.keras_applications()
    if function is None:
        return None
    return getattr(keras.applications, function)(
        weights=None, **keras_applications_arguments(model, config.name_prefix))


def load_weights(model: keras.Model, path, *, skip_mismatch: bool = False) -> dict:
    """Load a weights file into ``model`` by layer name, in either naming scheme.

    Reads legacy ``.h5`` files (keras.applications' published weights among them) and
    ``.keras`` files by their layer names, ``kresnet`` (``res2a_branch2a``) or
    keras.applications (``conv2_block1_1_conv``). Keras 3 ``.weights.h5`` files store no
    layer names: they are read into a twin of ``model`` (kresnet layout) or of its
    keras.applications equivalent, whichever the file fits, and moved over by name. With
    ``skip_mismatch=True`` layers that do not fit (a head of another class count) are
    skipped and reported. Layers of the file that the model lacks (a head, for a headless
    model) are listed as ``"unused"``. Returns ``{"loaded", "skipped", "unused"}`` lists.

    >>> import os, tempfile, kresnet
    >>> source = kresnet.create_resnet((32, 32, 3), 3, blocks=(1, 1), head="fc")
    >>> path = os.path.join(tempfile.mkdtemp(), "small.weights.h5")
    >>> source.save_weights(path)
    >>> target = kresnet.create_resnet((32, 32, 3), 7, blocks=(1, 1), head="fc")
    >>> load_weights(target, path, skip_mismatch=True)["skipped"]
    ['fc7']
    """
    validation.keras_model(model)
    path = validation.path(path)
    validation.boolean("skip_mismatch", skip_mismatch)
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an existing weights file; no file at {path!r}")
    if zipfile.is_zipfile(path):
        # Checked as kresnet.load checks a file: sizes, names, objects, HDF5 links.
        safety.check_keras_file(path)
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
        weights = {n: [np.asarray(w) for w in layer.weights]
                   for n, layer in _weighted(source).items()}
    elif h5py.is_hdf5(path):
        safety.check_hdf5(path)  # no external links, external or virtual storage, bombs
        weights = _legacy_h5_weights(path)
        if weights is None:
            return _load_unnamed(model, path, skip_mismatch)
    else:
        raise ValueError(f"{path!r} is neither a .keras file nor an HDF5 weights file.")
    mapping = _scheme_mapping(model, weights)
    return transfer_weights(_Arrays(path, weights), model, mapping,
                            skip_mismatch=skip_mismatch, use_all=False)


def _final_dense_units(path):
    """Class count of a Keras 3 ``.weights.h5`` file: the last Dense kernel's width."""
    with h5py.File(path, "r") as file:
        dense = sorted((n for n in file.get("layers", {}) if n.startswith("dense")),
                       key=lambda n: int(n.rpartition("_")[2]) if "_" in n else 0)
        if not dense or "0" not in file["layers"][dense[-1]]["vars"]:
            return None
        return file["layers"][dense[-1]]["vars"]["0"].shape[-1]


def _with_units(model, units):
    """A copy of ``model`` (same names) whose last Dense has ``units``, to be filled from a
    file: Keras' layers get zero initializers, which spares the random draws (millions)."""
    config = model.get_config()
    dense = [layer for layer in config["layers"] if layer["class_name"] == "Dense"]
    if dense and units is not None:
        dense[-1]["config"]["units"] = int(units)
    for layer in config["layers"]:
        if layer.get("module") == "keras.layers":
            layer["config"].update({key: "zeros" for key in layer["config"]
                                    if key.endswith("_initializer")})
    return model.__class__.from_config(config)


def _h5_layout(path):
    """Every dataset of an HDF5 file with its shape: the layout a Keras 3 file stores."""
    layout = []
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, item: layout.append((name, item.shape))
                        if isinstance(item, h5py.Dataset) else None)
    return sorted(layout)


def _load_unnamed(model, path, skip_mismatch):
    """A Keras 3 ``.weights.h5`` file, which stores positions, not names: find the twin
    (kresnet's layout or keras.applications') whose own file has exactly this layout."""
    units = _final_dense_units(path)

    def candidates():  # the keras.applications twin is built only where kresnet's misses
        yield _with_units(model, units), {}
        reference = keras_applications_twin(model)
        if reference is not None:
            yield _with_units(reference, units), keras_mapping(
                model, inspection.find_prefix(model))

    wanted = _h5_layout(path)
    for twin, mapping in candidates():
        with tempfile.TemporaryDirectory() as folder:
            probe = os.path.join(folder, "twin.weights.h5")
            twin.save_weights(probe)
            if _h5_layout(probe) != wanted:
                continue
        twin.load_weights(path)
        return transfer_weights(twin, model, mapping, skip_mismatch=skip_mismatch,
                                use_all=False)
    raise ValueError(f"{path!r} stores no layer names and its layout fits neither "
                     f"{model.name!r} nor its keras.applications equivalent.")


def check_imagenet(config: ResNetConfig) -> None:
    """``weights="imagenet"`` needs exactly a keras.applications configuration; say which
    argument departs from it before anything is built or downloaded."""
    wrong = config.keras_applications_mismatch()
    if config.head is not None and config.classes != 1000:
        wrong.append("n_classes")
    if config.input_shape[2] != 3:
        wrong.append("in_shape")
    if wrong:
        raise ValueError(
            "`weights`='imagenet' loads keras.applications' ResNet50/101/152(V2) weights, so "
            "the model must have their configuration (build it with kresnet.ResNet50 or "
            f"kresnet.build('resnet50v2')); these arguments differ: {', '.join(wrong)}.")


def imagenet_file(config: ResNetConfig) -> str:
    """Fetch keras.applications' ImageNet weights with Keras' own download code (cached in
    ``~/.keras/models``) and return the local path."""
    # The addresses and hashes are keras.applications' own, read where Keras keeps them.
    from keras.src.applications import resnet  # noqa: PLC0415

    check_imagenet(config)
    depth, preact, include_top = config.plan.depth, config.preact, config.head is not None
    weights_name = f"resnet{depth}{'v2' if preact else ''}"
    file_name = (f"{weights_name}_weights_tf_dim_ordering_tf_kernels"
                 f"{'' if include_top else '_notop'}.h5")
    try:
        return keras.utils.get_file(
            file_name, resnet.BASE_WEIGHTS_PATH + file_name, cache_subdir="models",
            file_hash=resnet.WEIGHTS_HASHES[weights_name][0 if include_top else 1])
    except Exception as error:  # noqa: BLE001 - any download failure gets the same advice
        raise RuntimeError(
            f"Could not download the ImageNet weights {file_name} ({error}). Without internet, "
            "fetch the file elsewhere and pass its path as `weights=`.") from error

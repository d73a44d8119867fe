"""Weights between kresnet and keras.applications, and weight files in either naming scheme.

keras.applications names a layer ``conv4_block23_3_conv`` where kresnet names it
``res4b22_branch2c``; :func:`kresnet.naming.keras_applications_names` holds the mapping.
Every transfer matches layers by name, never by position, and refuses (naming the layer)
anything that does not fit, so that a ResNet-50 file cannot silently fill a ResNet-101.
"""

import os
import re
import tempfile
import zipfile

import h5py
import keras
import numpy as np

from kresnet import naming
from kresnet.depths import DEPTHS

#: keras.applications functions by (depth, pre-activation).
KERAS_APPLICATIONS = {(50, False): "ResNet50", (101, False): "ResNet101",
                      (152, False): "ResNet152", (50, True): "ResNet50V2",
                      (101, True): "ResNet101V2", (152, True): "ResNet152V2"}
_KERAS_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_1_conv$")


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


def _stage_labels(model, prefix=""):
    """Block labels per stage of a kresnet model, read off its ``res{stage}{label}`` sums."""
    stages = {}
    pattern = re.compile(rf"^{re.escape(prefix)}res(\d+)([a-z][0-9]*)$")
    for layer in model.layers:
        match = pattern.match(layer.name)
        if match and isinstance(layer, keras.layers.Add):
            stages.setdefault(int(match.group(1)), []).append(match.group(2))
    return [stages[s] for s in sorted(stages)]


def transfer_weights(source, target, mapping=None, skip_mismatch=False, use_all=True):
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
    mapping = mapping or {}
    sources, report, used = _weighted(source), {"loaded": [], "skipped": []}, set()
    for name, layer in _weighted(target).items():
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


def _keras_config(model):
    """(depth, preact, top, classes, pooling, activation) of a keras.applications ResNet."""
    names = {layer.name for layer in model.layers}
    counts = {}
    for name in names:
        match = _KERAS_BLOCK.match(name)
        if match:
            stage = int(match.group(1))
            counts[stage] = max(counts.get(stage, 0), int(match.group(2)))
    blocks = tuple(counts[s] for s in sorted(counts))
    depth = next((d for d, row in DEPTHS.items()
                  if row.blocks == blocks and row.block_type == "bottleneck"), None)
    preact = "post_bn" in names
    if (depth, preact) not in KERAS_APPLICATIONS:
        raise ValueError(f"Model {model.name!r} is not a keras.applications ResNet50/101/152 "
                         f"or ResNet50V2/101V2/152V2 (blocks per stage {blocks}).")
    top = "predictions" in names
    head = model.get_layer("predictions") if top else None
    pooling = "avg" if "avg_pool" in names else "max" if "max_pool" in names else None
    return depth, preact, top, head.units if top else 1000, pooling, \
        head.activation if top else "softmax"


def _kresnet_twin(depth, preact, **arguments):
    from kresnet.builder import applications_call  # noqa: PLC0415 (builder imports us)

    options = {"preact": True, "stride_block": "last", "stride_on": "3x3"} if preact else {}
    return applications_call(depth, use_bias=True, head="fc", **options, **arguments)


def from_keras_applications(model):
    """The kresnet model with the same configuration as a keras.applications ResNet (v1 or
    v2, with or without its head), holding its weights.

    >>> import keras
    >>> reference = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> from_keras_applications(reference).get_layer("res4f_branch2c").filters
    1024
    """
    depth, preact, top, classes, pooling, activation = _keras_config(model)
    ours = _kresnet_twin(depth, preact, include_top=top, classes=classes, pooling=pooling,
                         classifier_activation=activation,
                         input_shape=tuple(model.input_shape[1:]),
                         bn_momentum=model.get_layer("conv2_block1_1_bn").momentum)
    transfer_weights(model, ours, _keras_mapping(ours))
    return ours


def to_keras_applications(model):
    """The keras.applications ResNet of the same configuration as a kresnet model, holding
    its weights. Refuses, naming the first layer that differs, a model keras.applications
    cannot express (torchvision's stride placement, ResNeXt, SE, other stems...).

    >>> import kresnet
    >>> to_keras_applications(kresnet.ResNet50(input_shape=(64, 64, 3))).name
    'resnet50'
    """
    preact = "bn_post" in {layer.name for layer in model.layers}
    labels = _stage_labels(model)
    blocks = tuple(len(stage) for stage in labels)
    depth = next((d for d, row in DEPTHS.items()
                  if row.blocks == blocks and row.block_type == "bottleneck"), None)
    if (depth, preact) not in KERAS_APPLICATIONS:
        raise ValueError(f"Model {model.name!r} has blocks per stage {blocks}"
                         f"{' (pre-activation)' if preact else ''}: keras.applications has "
                         "ResNet50/101/152 and ResNet50V2/101V2/152V2 only.")
    names = {layer.name for layer in model.layers}
    fc = _fc_layer(model)
    top = fc is not None
    classes = model.get_layer(fc).units if top else 1000
    pooling = "avg" if "avg_pool" in names else "max" if "max_pool" in names else None
    activation = model.get_layer(fc).activation if top else "softmax"
    twin = _kresnet_twin(depth, preact, include_top=top, classes=classes, pooling=pooling,
                         classifier_activation=activation,
                         input_shape=tuple(model.input_shape[1:]))
    _same_architecture(model, twin)
    reference = getattr(keras.applications, KERAS_APPLICATIONS[(depth, preact)])(
        weights=None, include_top=top, classes=classes, pooling=pooling,
        classifier_activation=activation, input_shape=tuple(model.input_shape[1:]))
    inverse = {theirs: ours for ours, theirs in _keras_mapping(model).items()}
    transfer_weights(model, reference, inverse)
    return reference


def _layout(layer):
    config = layer.get_config()
    return {key: config.get(key) for key in ("kernel_size", "strides", "groups", "filters",
                                             "padding", "pool_size", "units")}


def _same_architecture(model, twin):
    """Raise naming the first layer where ``model`` differs from the expected ``twin``."""
    ours = {layer.name: layer for layer in model.layers}
    for layer in twin.layers:
        other = ours.get(layer.name)
        if other is None or type(other) is not type(layer) or _layout(other) != _layout(layer):
            found = "missing" if other is None else f"{type(other).__name__} {_layout(other)}"
            raise ValueError(
                f"Model {model.name!r} differs from keras.applications' layout at layer "
                f"{layer.name!r}: expected {type(layer).__name__} {_layout(layer)}, found "
                f"{found}.")
    extra = [name for name in ours if name not in {layer.name for layer in twin.layers}]
    if extra:
        raise ValueError(f"Model {model.name!r} has layer {extra[0]!r}, which "
                         "keras.applications' layout does not have.")


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


def _fc_layer(model):
    """Name of the model's ``fc{classes}`` head layer, or None."""
    return next((layer.name for layer in model.layers
                 if re.fullmatch(r"fc\d+", layer.name)), None)


def _keras_mapping(model):
    """kresnet name -> keras.applications name for every layer of ``model``, head included."""
    mapping = naming.keras_applications_names(_stage_labels(model))
    fc = _fc_layer(model)
    if fc:
        mapping[fc] = "predictions"
    return mapping


def _scheme_mapping(model, file_names):
    """Map the model's names to the file's: kresnet's own names, or keras.applications'."""
    ours = set(_weighted(model))
    if ours & set(file_names):
        return {}
    mapping = _keras_mapping(model)
    if not set(mapping.values()) & set(file_names):
        raise ValueError("The weights file uses neither kresnet's layer names (res2a_branch2a) "
                         "nor keras.applications' (conv2_block1_1_conv).")
    return mapping


def load_weights(model, path, skip_mismatch=False):
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
    >>> source = kresnet.ResNet18(input_shape=(32, 32, 3), classes=3)
    >>> path = os.path.join(tempfile.mkdtemp(), "r18.weights.h5")
    >>> source.save_weights(path)
    >>> target = kresnet.ResNet18(input_shape=(32, 32, 3), classes=7)
    >>> load_weights(target, path, skip_mismatch=True)["skipped"]
    ['fc7']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"`path` must be an existing weights file; no file at {path!r}")
    if zipfile.is_zipfile(path):
        source = keras.saving.load_model(path, compile=False, safe_mode=True)
        weights = {n: [np.asarray(w) for w in layer.weights]
                   for n, layer in _weighted(source).items()}
    elif h5py.is_hdf5(path):
        weights = _legacy_h5_weights(path)
        if weights is None:
            return _load_unnamed(model, path, skip_mismatch)
    else:
        raise ValueError(f"{path!r} is neither a .keras file nor an HDF5 weights file.")
    mapping = _scheme_mapping(model, weights)
    return transfer_weights(_Arrays(path, weights), model, mapping, skip_mismatch,
                            use_all=False)


def _final_dense_units(path):
    """Class count of a Keras 3 ``.weights.h5`` file: the last Dense kernel's width."""
    with h5py.File(path, "r") as file:
        dense = sorted((n for n in file.get("layers", {}) if n.startswith("dense")),
                       key=lambda n: int(n.rpartition("_")[2]) if "_" in n else 0)
        if not dense or "0" not in file["layers"][dense[-1]]["vars"]:
            return None
        return file["layers"][dense[-1]]["vars"]["0"].shape[-1]


def _with_units(model, units):
    """A copy of ``model`` (same names, fresh weights) whose last Dense has ``units``."""
    config = model.get_config()
    dense = [layer for layer in config["layers"] if layer["class_name"] == "Dense"]
    if dense and units is not None:
        dense[-1]["config"]["units"] = int(units)
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
    candidates = [(_with_units(model, units), {})]
    try:
        reference = to_keras_applications(model)
    except ValueError:
        reference = None
    if reference is not None:
        candidates.append((_with_units(reference, units), _keras_mapping(model)))
    wanted = _h5_layout(path)
    for twin, mapping in candidates:
        with tempfile.TemporaryDirectory() as folder:
            probe = os.path.join(folder, "twin.weights.h5")
            twin.save_weights(probe)
            if _h5_layout(probe) != wanted:
                continue
        twin.load_weights(path)
        return transfer_weights(twin, model, mapping, skip_mismatch, use_all=False)
    raise ValueError(f"{path!r} stores no layer names and its layout fits neither "
                     f"{model.name!r} nor its keras.applications equivalent.")


def imagenet_file(depth, preact, include_top):
    """Fetch keras.applications' ImageNet weights with Keras' own download code (cached in
    ``~/.keras/models``) and return the local path."""
    # The addresses and hashes are keras.applications' own, read where Keras keeps them.
    from keras.src.applications import resnet  # noqa: PLC0415

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

"""A model made ready for inference on the CPU: float32 with folded batch norms, bfloat16, or
int8 through onnxruntime (:func:`optimize`).

- ``"float32"``: :func:`kresnet.fold_batchnorm` of the model; the same numbers up to float32
  rounding, fewer passes over the activations.
- ``"bfloat16"``: the folded model under Keras' ``mixed_bfloat16`` policy. Variables stay
  float32; convolutions and their activations run in bfloat16 (7 bits of mantissa), which
  oneDNN runs natively on CPUs with ``avx512_bf16`` or ``amx_bf16``. The input's
  normalisation layers and the head (global pooling onwards, classifier included) stay in
  float32: they are cheap, and a softmax in bfloat16 rounds probabilities coarsely.
- ``"int8"``: static quantization by onnxruntime of the folded model's ONNX file. Weights are
  int8 per output channel, activations uint8 with ranges calibrated on images you give (a
  few hundred of the kind the model will see). The first convolution and the classifier are
  kept in float by default (``keep_float``): they see raw pixels and make the logits, where
  8 bits cost the most accuracy for a few percent of the work.

Every path returns an :class:`InferenceModel` whose ``predict(x)`` takes and gives NumPy
arrays, and whose ``export(path)`` writes it: a ``.keras`` file for the float paths (it loads
with ``kresnet.load`` or ``keras.saving.load_model``), an ``.onnx`` file for int8 (it runs with
``onnxruntime.InferenceSession``).

Where the CPU lacks the instructions that make a path fast, :func:`optimize` still returns a
correct model and says what it costs in a :class:`PerformanceWarning` (:data:`NATIVE` lists
the instructions; Linux reports them in /proc/cpuinfo, elsewhere they are not known and
nothing is said).

>>> import kresnet
>>> kresnet.optimize(kresnet.build("resnet20"), precision="float16")
Traceback (most recent call last):
    ...
ValueError: `precision` must be one of 'float32', 'bfloat16', 'int8'. Received: precision='float16'
"""

import contextlib
import importlib.util
import io
import os
import sys
import tempfile
import warnings
from typing import Iterable, Optional, Sequence, Union

import keras
import numpy as np

from kresnet import validation

#: The precisions :func:`optimize` makes.
PRECISIONS = ("float32", "bfloat16", "int8")
#: How int8 calibration picks each activation's range: the extremes seen (``"minmax"``), the
#: 0.001 and 99.999 percentiles (``"percentile"``), or the range that keeps the histogram's
#: entropy (``"entropy"``); onnxruntime's MinMax, Percentile and Entropy calibrators.
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
_ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
#: CPU flags (as /proc/cpuinfo spells them) with which each precision runs natively: x86's
#: AVX-512 BF16 or AMX for bfloat16, VNNI (AVX-512 or AVX) or AMX for int8, and the Arm
#: equivalents (``bf16``; ``asimddp``, the dot product).
NATIVE = {"bfloat16": ("avx512_bf16", "amx_bf16", "bf16"),
          "int8": ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")}
#: What each precision costs where its instructions are missing.
FALLBACK = {
    "bfloat16": ("this CPU has no bfloat16 instructions (none of {flags}): bfloat16 is "
                 "emulated, typically slower than float32 and less accurate. "
                 "precision='float32' is the fast path here."),
    "int8": ("this CPU has no int8 dot-product instructions (none of {flags}): onnxruntime "
             "uses its AVX2 kernels with 7-bit weights (reduce_range) to avoid overflow, about "
             "half of VNNI's speed and a little less accurate."),
}
_EXPORT_PACKAGES = ("onnx", "tf2onnx", "onnxruntime")


class PerformanceWarning(UserWarning):
    """A path runs correctly but slower than it would on a CPU with the right instructions."""


def cpu_flags() -> Optional[frozenset]:
    """The CPU's instruction-set flags from /proc/cpuinfo, or ``None`` where there is none.

    >>> flags = cpu_flags()
    >>> flags is None or isinstance(flags, frozenset)
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return frozenset(flags) if flags else None


def native(precision: str, flags: Optional[frozenset] = None) -> Optional[bool]:
    """Whether this CPU (or one with ``flags``) runs ``precision`` natively; ``None`` where
    that is not known. float32 always is.

    >>> native("bfloat16", frozenset({"avx512f", "avx512_bf16"}))
    True
    >>> native("int8", frozenset({"avx2"}))
    False
    """
    validation.one_of("precision", precision, PRECISIONS)
    if precision == "float32":
        return True
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return any(flag in flags for flag in NATIVE[precision])


class InferenceModel:
    """What :func:`optimize` returns: ``predict`` NumPy batches, ``export`` to a file.

    ``precision`` is the path; ``model`` the Keras model of a float path (``None`` for
    int8); ``onnx`` the int8 model's ONNX bytes (``None`` for the float paths);
    ``input_shape`` the input's shape without the batch; ``keep_float`` the layers int8
    left in float; ``batch_size`` what ``predict`` runs at once.
    """

    def __init__(self, precision, input_shape, *, model=None, onnx=None, batch_size=32,
                 keep_float=()):
        self.precision = precision
        self.input_shape = tuple(input_shape)
        self.model = model
        self.onnx = onnx
        self.batch_size = batch_size
        self.keep_float = tuple(keep_float)
        self._session = None
        self._input_name = None
        if onnx is not None:
            self._session = _session(onnx)
            self._input_name = self._session.get_inputs()[0].name

    def __repr__(self):
        return (f"InferenceModel(precision={self.precision!r}, input_shape={self.input_shape}, "
                f"batch_size={self.batch_size})")

    def predict(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """The outputs for the images ``x`` (N, *input_shape), as a float32 NumPy array.

        >>> import numpy as np, kresnet
        >>> net = kresnet.build("resnet20", classes=3)
        >>> fast = kresnet.optimize(net)
        >>> fast.predict(np.zeros((2, 32, 32, 3), "float32")).shape
        (2, 3)
        """
        batch_size = self.batch_size if batch_size is None else \
            validation.positive_int("batch_size", batch_size)
        x = _images("x", x, self.input_shape)
        outputs = []
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size]
            if self._session is not None:
                outputs.append(self._session.run(None, {self._input_name: chunk})[0])
            else:
                outputs.append(keras.ops.convert_to_numpy(self.model.predict_on_batch(chunk)))
        if not outputs:
            return np.zeros((0,) + tuple(self._output_shape()), np.float32)
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def _output_shape(self):
        if self.model is not None:
            return self.model.output_shape[1:]
        shape = self._session.get_outputs()[0].shape[1:]
        return [size if isinstance(size, int) else 0 for size in shape]

    def export(self, path: Union[str, os.PathLike]) -> str:
        """Write the model to ``path``: a ``.keras`` file (float32, bfloat16) or an ``.onnx``
        file (int8), never half-written. Returns ``path`` as a str.

        >>> import os, tempfile, kresnet
        >>> fast = kresnet.optimize(kresnet.build("resnet20"), "bfloat16")
        >>> path = fast.export(os.path.join(tempfile.mkdtemp(), "fast.keras"))
        >>> kresnet.load(path).get_layer("conv1").dtype_policy.name
        'mixed_bfloat16'
        """
        from kresnet import files  # noqa: PLC0415 (files imports safety, which is large)

        path = validation.path(path)
        ending = ".onnx" if self.onnx is not None else ".keras"
        if not os.fspath(path).endswith(ending):
            raise ValueError(f"`path` must end in {ending!r} for precision={self.precision!r}. "
                             f"Received: path={os.fspath(path)!r}")
        if self.onnx is not None:
            return files.write_bytes(path, self.onnx)
        return files.save(self.model, path)


def optimize(model: keras.Model, precision: str = "float32",
             calibration: Union[None, np.ndarray, Iterable] = None, *,
             method: str = "percentile", keep_float: Optional[Sequence[str]] = None,
             batch_size: int = 32, progress: bool = True) -> InferenceModel:
    """``model`` made ready for inference at ``precision``: ``"float32"``, ``"bfloat16"`` or
    ``"int8"`` (see the module's text for what each does). The model is not changed.

    ``calibration`` (int8 only, required there): images in the model's input form, as one
    array (N, *input shape) or an iterable of batches (a ``tf.data.Dataset`` too; an
    ``(images, labels)`` pair counts as its images), a few hundred of the kind the model
    will see. ``method``: one of :data:`CALIBRATION_METHODS` (percentile: one stray
activation cannot stretch a range). ``keep_float`` (int8): names
    of the Conv2D/Dense layers left in float; ``None`` keeps the first convolution and the
    last Dense layer. ``batch_size``: images per run in ``predict`` and in calibration.
    ``progress``: show a progress bar while calibrating. int8 needs the TensorFlow back end
    and ``pip install kresnet[export]``.

    >>> import numpy as np, kresnet
    >>> net = kresnet.build("resnet20", classes=4)
    >>> x = np.random.default_rng(0).random((8, 32, 32, 3), "float32")
    >>> fast = kresnet.optimize(net, "int8", calibration=x, progress=False)
    >>> fast.predict(x).argmax(1).shape
    (8,)
    """
    validation.keras_model(model)
    validation.one_of("precision", precision, PRECISIONS)
    validation.one_of("method", method, CALIBRATION_METHODS)
    batch_size = validation.positive_int("batch_size", batch_size)
    validation.boolean("progress", progress)
    input_shape = _input_shape(model)
    if precision != "int8":
        for name, value, default in (("calibration", calibration, None),
                                     ("keep_float", keep_float, None),
                                     ("method", method, "percentile")):
            if (value is not None) if default is None else (value != default):
                raise ValueError(f"`{name}` is used by precision='int8' only. Received: "
                                 f"{name}={value!r} with precision={precision!r}")
    else:
        _check_int8(model, calibration, input_shape)
        keep_float = _keep_float(model, keep_float)
    _warn_if_slow(precision)

    from kresnet.folding import fold_batchnorm  # noqa: PLC0415

    with warnings.catch_warnings():
        # A batch norm that cannot fold stays as it is: that is the right result here.
        warnings.filterwarnings("ignore", message=".*cannot be folded", category=UserWarning)
        folded = fold_batchnorm(model)
    if precision == "float32":
        return InferenceModel(precision, input_shape, model=folded, batch_size=batch_size)
    if precision == "bfloat16":
        return InferenceModel(precision, input_shape, model=bfloat16_copy(folded),
                              batch_size=batch_size)
    onnx = _quantize(folded, calibration, input_shape, method, keep_float, batch_size,
                     progress)
    return InferenceModel(precision, input_shape, onnx=onnx, batch_size=batch_size,
                          keep_float=keep_float)


# -- float paths ----------------------------------------------------------------------------

#: Layers that close the spatial part of a network: from the first of them on, it is head.
_HEAD_STARTS = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
                keras.layers.Flatten)
#: Input-side layers kept in float32: they scale raw pixels, which bfloat16 rounds to 3
#: significant digits.
_INPUT_SIDE = (keras.layers.Normalization, keras.layers.Rescaling)


def _parents(layer):
    return {tensor._keras_history.operation.name
            for node in getattr(layer, "_inbound_nodes", [])
            for tensor in keras.tree.flatten(node.input_tensors)}


def _rank(layer):
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # several outputs, or called more than once
        return None


def float32_layers(model: keras.Model) -> list:
    """Names of the layers :func:`bfloat16_copy` keeps in float32: input-side scaling
    (``Normalization``, ``Rescaling`` fed by the input alone) and the head: a global pooling
    or ``Flatten`` from which no layer leads back to a spatial map, and every layer after
    it. The pools of squeeze-excitation and ECA inside each block scale a spatial map
    again, so they are no head.

    >>> import kresnet
    >>> float32_layers(kresnet.build("resnet20"))
    ['avg_pool', 'fc10']
    """
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    parents = {layer.name: _parents(layer) for layer in layers}
    children = {layer.name: set() for layer in model.layers}
    for name, above in parents.items():
        for parent in above:
            children.setdefault(parent, set()).add(name)
    spatial = len(model.inputs[0].shape) if len(model.inputs) == 1 else 4
    ranks = {layer.name: _rank(layer) for layer in layers}

    def below(name):  # the layers downstream of ``name``, itself included
        seen, todo = set(), [name]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(children.get(current, ()))
        return seen

    head = set()
    for layer in layers:  # in the graph's order: a layer comes after its inputs
        if isinstance(layer, _HEAD_STARTS) and layer.name not in head:
            downstream = below(layer.name)
            if all(ranks.get(name) is not None and ranks[name] < spatial
                   for name in downstream):
                head |= downstream
    input_side = {layer.name for layer in model.layers
                  if isinstance(layer, keras.layers.InputLayer)}
    names = []
    for layer in layers:
        if layer.name in head:
            names.append(layer.name)
        elif isinstance(layer, _INPUT_SIDE) and parents[layer.name] and \
                parents[layer.name] <= input_side:
            input_side.add(layer.name)
            names.append(layer.name)
    return names


def bfloat16_copy(model: keras.Model) -> keras.Model:
    """A copy of ``model`` under the ``mixed_bfloat16`` policy, with the layers of
    :func:`float32_layers` in float32 and the same weights (float32 variables).

    >>> import kresnet
    >>> copy = bfloat16_copy(kresnet.build("resnet20"))
    >>> copy.get_layer("res2a_branch2a").compute_dtype, copy.get_layer("fc10").compute_dtype
    ('bfloat16', 'float32')
    """
    validation.keras_model(model)
    from kresnet.folding import copy_model  # noqa: PLC0415

    keep = set(float32_layers(model))

    def make(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer.name in keep else "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = copy_model(model, make)
    copy.trainable = model.trainable
    return copy


# -- int8 -----------------------------------------------------------------------------------

def _check_int8(model, calibration, input_shape):
    """Everything int8 needs, checked before any work."""
    if calibration is None:
        raise ValueError("precision='int8' needs `calibration`: images in the model's input "
                         "form, as an array (N, *input shape) or an iterable of batches; a "
                         "few hundred of the kind the model will see.")
    if isinstance(calibration, (np.ndarray, list, tuple)) or hasattr(calibration, "__array__"):
        if len(_images("calibration", calibration, input_shape)) == 0:
            raise ValueError("`calibration` holds no images.")
    elif not hasattr(calibration, "__iter__"):
        raise TypeError("`calibration` must be an array of images or an iterable of batches. "
                        f"Received: calibration of type {type(calibration).__name__}")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(f"precision='int8' exports through TensorFlow (tf2onnx); the Keras "
                           f"back end is {backend!r}. Set KERAS_BACKEND=tensorflow, or save "
                           "the model and quantize it in such a process.")
    missing = [name for name in _EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"precision='int8' needs {', '.join(missing)}, which are not "
                          "installed: `pip install kresnet[export]`.")


def _keep_float(model, keep_float):
    computing = [layer for layer in model.layers
                 if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    if keep_float is None:
        first = next((layer.name for layer in computing
                      if isinstance(layer, keras.layers.Conv2D)), None)
        last = next((layer.name for layer in reversed(computing)
                     if isinstance(layer, keras.layers.Dense)), None)
        return tuple(name for name in (first, last) if name is not None)
    if isinstance(keep_float, str) or not isinstance(keep_float, (list, tuple)) or \
            not all(isinstance(name, str) for name in keep_float):
        raise TypeError("`keep_float` must be None or a list of layer names. Received: "
                        f"keep_float={keep_float!r}")
    names = {layer.name for layer in computing}
    unknown = [name for name in keep_float if name not in names]
    if unknown:
        raise ValueError(f"`keep_float` names no Conv2D or Dense layer of {model.name!r}: "
                         f"{unknown}. Received: keep_float={list(keep_float)!r}")
    return tuple(keep_float)


def _warn_if_slow(precision):
    if native(precision) is False:
        flags = ", ".join(NATIVE[precision])
        warnings.warn(FALLBACK[precision].format(flags=flags), PerformanceWarning,
                      stacklevel=3)


def _images(name, value, input_shape):
    """``value`` as a float32 array (N, *input_shape); sizes given as ``None`` match any."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` must be an array of images. Received: {name} of type "
                        f"{type(value).__name__} ({error})") from None
    fits = array.ndim == len(input_shape) + 1 and all(
        want is None or want == got for want, got in zip(input_shape, array.shape[1:]))
    if not fits:
        expected = ", ".join("any" if size is None else str(size) for size in input_shape)
        raise ValueError(f"`{name}` must have the shape (N, {expected}), the model's input. "
                         f"Received: {name} of shape {array.shape}")
    return array


def _input_shape(model):
    inputs, outputs = model.inputs, model.outputs
    if len(inputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(inputs)} inputs; optimize takes "
                         "models with one image input.")
    if len(outputs) != 1:
        raise ValueError(f"Model {model.name!r} has {len(outputs)} outputs; optimize takes "
                         "models with one output (a classifier or one feature map).")
    return tuple(inputs[0].shape[1:])


def _batches(calibration, input_shape, batch_size):
    """The calibration images as float32 batches."""
    if isinstance(calibration, (np.ndarray, list, tuple)) or hasattr(calibration, "__array__"):
        images = _images("calibration", calibration, input_shape)
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size]
        return
    for batch in calibration:
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        if isinstance(batch, dict):
            batch = next(iter(batch.values()))
        yield _images("calibration", keras.ops.convert_to_numpy(batch), input_shape)


def _session(onnx):
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    # Spinning threads wait for work by busy-looping: on a shared or small machine they take
    # the cores that the next run needs (about 30% of the throughput at batch 1 here).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def _onnx_names(graph, layers):
    """The ONNX nodes that tf2onnx made of the Keras ``layers``: its node names are
    ``{model}_1/{layer}_1/{op}``."""
    wanted = set(layers)
    found = []
    for node in graph.node:
        parts = node.name.split("/")
        if len(parts) > 2:
            layer = parts[1]
            base, _, suffix = layer.rpartition("_")
            if layer in wanted or (suffix.isdigit() and base in wanted):
                if node.op_type in ("Conv", "MatMul", "Gemm"):
                    found.append(node.name)
    return found


def _quantize(folded, calibration, input_shape, method, keep_float, batch_size, progress):
    import onnx  # noqa: PLC0415
    from onnxruntime import quantization  # noqa: PLC0415

    from kresnet.exporting import export  # noqa: PLC0415

    int8_native = native("int8") is not False
    with tempfile.TemporaryDirectory(prefix="kresnet-int8-") as work:
        exported = export(folded, os.path.join(work, "float.onnx"), "onnx")
        prepared = os.path.join(work, "prepared.onnx")
        quantized = os.path.join(work, "int8.onnx")
        quantization.quant_pre_process(exported, prepared)
        graph = onnx.load(prepared).graph
        excluded = _onnx_names(graph, keep_float)
        reader = _Reader(_batches(calibration, input_shape, batch_size), graph.input[0].name,
                         _count(calibration), progress)
        chatter = io.StringIO()  # onnxruntime's calibrators print as they go
        with contextlib.redirect_stdout(chatter):
            quantization.quantize_static(
                prepared, quantized, reader, quant_format=quantization.QuantFormat.QDQ,
                per_channel=True, reduce_range=not int8_native,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=getattr(quantization.CalibrationMethod, _ORT_METHODS[method]),
                nodes_to_exclude=excluded)
        reader.finish()
        if reader.images == 0:
            raise ValueError("`calibration` holds no images.")
        with open(quantized, "rb") as file:
            return file.read()


def _count(calibration):
    try:
        return len(calibration) if isinstance(calibration, np.ndarray) else None
    except TypeError:
        return None


class _Reader:
    """onnxruntime's calibration data reader over our batches, with a progress bar."""

    def __init__(self, batches, input_name, total, progress):
        self._batches = batches
        self._input_name = input_name
        self.images = 0
        self._bar = keras.utils.Progbar(total, unit_name="image") if progress else None
        self._stdout = sys.stdout  # the bar's; onnxruntime's prints are redirected away

    def get_next(self):
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.images += len(batch)
        if self._bar is not None:
            with contextlib.redirect_stdout(self._stdout):
                self._bar.update(self.images)
        return {self._input_name: batch}

    def rewind(self):  # onnxruntime calls it before a second pass; one pass is all we give
        pass

    def finish(self):
        if self._bar is not None and self._bar.target is None:
            with contextlib.redirect_stdout(self._stdout):
                self._bar.update(self.images, finalize=True)

"""Export a model for serving without Keras or kresnet: an ONNX file or a TensorFlow SavedModel.

What Keras 3.15's ``model.export`` does on each back end, and what :func:`export` takes:

- ``format="onnx"``: Keras converts from TensorFlow (tf2onnx and onnx), JAX (jax2onnx) and
  PyTorch (torch.onnx). :func:`export` takes the TensorFlow back end, whose packages
  ``pip install kresnet[export]`` installs (with onnxruntime to run the file), and refuses
  the others with an error that says so.
- ``format="savedmodel"`` (Keras' ``"tf_saved_model"``): TensorFlow, and JAX through
  jax2tf; both are taken. Keras' PyTorch support is experimental and fails on these
  models (torch.export's dynamic shapes), so PyTorch is refused.

Save the model (``model.save("net.keras")``) and export it from a TensorFlow process to go
from another back end to ONNX.

``kresnet.export`` is this module's :func:`export` (the module is ``kresnet.exporting``, so
that the two names never clash):

>>> import kresnet
>>> kresnet.export(None, "net.onnx", format="tflite")
Traceback (most recent call last):
    ...
ValueError: `format` must be one of 'onnx', 'savedmodel'. Received: format='tflite'
"""

import importlib.util
import os
import shutil
import tempfile
import warnings
from typing import Union

import keras
import numpy as np

from kresnet import validation
from kresnet.config import DEFAULT_SIZE
from kresnet.folding import copy_model

#: The formats :func:`export` writes.
FORMATS = ("onnx", "savedmodel")
_KERAS_FORMATS = {"onnx": "onnx", "savedmodel": "tf_saved_model"}
#: Keras back ends each format is supported on here.
BACKENDS = {"onnx": ("tensorflow",), "savedmodel": ("tensorflow", "jax")}
#: Packages each format needs (import names), and how to install them.
PACKAGES = {"onnx": ("tf2onnx", "onnx"), "savedmodel": ("tensorflow",)}
_INSTALL = {"onnx": "`pip install kresnet[export]` (onnx, tf2onnx, onnxruntime)",
            "savedmodel": "`pip install tensorflow`"}


def export(model: keras.Model, path: Union[str, os.PathLike], format: str = "onnx") -> str:
    """Write ``model``'s inference forward pass (``training=False``) to ``path``.

    ``format="onnx"`` writes one ``.onnx`` file (run it with onnxruntime; needs the
    TensorFlow back end and ``pip install kresnet[export]``); ``format="savedmodel"`` writes
    a TensorFlow SavedModel folder (load it with ``tf.saved_model.load`` or
    ``keras.layers.TFSMLayer``; TensorFlow or JAX back end). Input sizes given as ``None``
    stay variable in the export. A model that was never called is first called once on a
    zero batch, as Keras refuses to export it otherwise. The artifact is written next to
    ``path`` in a temporary ``.*.part`` folder and moved into place only once complete, so
    an existing file or folder at ``path`` survives a failed or killed export. Returns
    ``path`` as a str.

    >>> import os, tempfile, kresnet
    >>> model = kresnet.create_resnet((32, 32, 3), 2, blocks=(1,), block_type="basic",
    ...                               head="fc")
    >>> path = kresnet.export(model, os.path.join(tempfile.mkdtemp(), "net"), "savedmodel")
    >>> "saved_model.pb" in os.listdir(path)
    True
    """
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(repr(f) for f in FORMATS)}. "
                         f"Received: format={format!r}")
    validation.keras_model(model)
    path = validation.path(path)
    backend = keras.backend.backend()
    if backend not in BACKENDS[format]:
        raise RuntimeError(
            f"format={format!r} needs the Keras back end to be "
            f"{' or '.join(BACKENDS[format])}; it is {backend!r}. Set KERAS_BACKEND="
            f"{BACKENDS[format][0]} before importing keras, or save the model and export "
            "it from such a process.")
    missing = [name for name in PACKAGES[format] if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"format={format!r} needs the package(s) {', '.join(missing)}, "
                          f"which are not installed. Install them with {_INSTALL[format]}.")
    target = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(target)
    is_folder = os.path.isdir(target)
    if os.path.lexists(target) and is_folder != (format == "savedmodel"):
        raise ValueError(f"{target!r} is a {'folder' if is_folder else 'file'}; "
                         f"format={format!r} writes a {'folder' if not is_folder else 'file'} "
                         "and does not replace it. Remove it or pick another `path`.")
    os.makedirs(folder, exist_ok=True)
    if format == "onnx":
        model = exportable(model)
    _ensure_called(model)

    work = tempfile.mkdtemp(prefix=f".{base}.", suffix=".part", dir=folder)
    try:
        artifact = os.path.join(work, base)
        with warnings.catch_warnings():
            # Keras' tf2onnx patch probes np.object, which NumPy 2 warns about.
            warnings.filterwarnings("ignore", message=".*`np.object`", category=FutureWarning)
            model.export(artifact, format=_KERAS_FORMATS[format], verbose=False)
        if format == "onnx":
            os.replace(artifact, target)
        else:
            _replace_folder(artifact, target, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return os.fspath(path)


def exportable(model: keras.Model) -> keras.Model:
    """``model``, or a copy whose ``Normalization`` layers are ``Rescaling`` layers of the
    same per-channel affine map, for ONNX.

    Keras' ``Normalization`` keeps its mean and variance as eager tensors, which tf2onnx
    turns into *graph inputs* with no values: the file then asks for them at every run
    (``Required inputs ... normalize_1/Sub/y:0 ... are missing``). ``Rescaling`` makes its
    scale and offset inside the traced call, so they become constants of the graph. The
    copy gives the same outputs up to float32 rounding (``x * (1/s) - m/s`` for
    ``(x - m) / s``).

    >>> import numpy as np, keras
    >>> inputs = keras.Input((4, 4, 2))
    >>> norm = keras.layers.Normalization(mean=[1.0, 2.0], variance=[4.0, 9.0])
    >>> model = keras.Model(inputs, norm(inputs))
    >>> [type(layer).__name__ for layer in exportable(model).layers]
    ['InputLayer', 'Rescaling']
    """
    if not any(_is_normalization(layer) for layer in model.layers):
        return model

    def make(layer):
        if not _is_normalization(layer):
            return layer.__class__.from_config(layer.get_config())
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64)[0]
        deviation = np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance),
                                       dtype=np.float64)[0])
        # Normalization divides by max(sqrt(variance), epsilon).
        scale = 1.0 / np.maximum(deviation, keras.config.epsilon())
        return keras.layers.Rescaling(scale.astype("float32").tolist(),
                                      (-mean * scale).astype("float32").tolist(),
                                      name=layer.name, dtype=layer.dtype_policy)

    return copy_model(model, make)


def _is_normalization(layer):
    return isinstance(layer, keras.layers.Normalization) and not layer.invert


def _ensure_called(model):
    """Call a never-called model once on zeros (batch 1, ``None`` sizes -> 224)."""
    if getattr(model, "_called", False):
        return
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(f"Model {model.name!r} has no known inputs: build or call it once "
                         "before exporting it.")
    zeros = [np.zeros([1] + [DEFAULT_SIZE if size is None else size
                             for size in tensor.shape[1:]], dtype=tensor.dtype)
             for tensor in inputs]
    model(zeros[0] if len(zeros) == 1 else zeros, training=False)


def _replace_folder(new, target, work):
    """Move folder ``new`` to ``target``; an old ``target`` is kept aside until then."""
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    old = os.path.join(work, "previous")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise

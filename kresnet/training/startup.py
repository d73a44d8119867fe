"""Start TensorFlow for training: Keras' TensorFlow back end, without the start-up lines.

TensorFlow writes lines such as ``I0000 ... oneDNN custom operations are on``, ``Could not
find cuda drivers on your machine`` and ``failed call to cuInit`` straight to file
descriptor 2 while it is imported and while it looks for devices; ``TF_CPP_MIN_LOG_LEVEL``
does not hide the first two (they come before its logging starts). :func:`import_tensorflow`
points descriptor 2 at ``/dev/null`` for those moments only, unless
``TF_CPP_MIN_LOG_LEVEL`` is 0 or 1 (you asked for TensorFlow's information).
"""

import contextlib
import os
import sys

from kresnet.training.settings import TrainingError


@contextlib.contextmanager
def stderr_closed():
    """File descriptor 2 (and ``sys.stderr``) pointed at ``/dev/null`` inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def startup_lines_hidden():
    """:func:`stderr_closed`, or a block that changes nothing when ``TF_CPP_MIN_LOG_LEVEL``
    is 0 or 1 (TensorFlow's information was asked for)."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "") in ("0", "1"):
        return contextlib.nullcontext()
    return stderr_closed()


def prefer_onednn():
    """Ask TensorFlow for its oneDNN CPU kernels, unless ``TF_ENABLE_ONEDNN_OPTS`` is set.

    TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or BF16 or AMX. On
    others (an AVX2 CPU) its own kernels trained a ResNet 2.1 times slower on this project's
    machine, and they cannot run a ``channels_first`` convolution at all. It must run before
    TensorFlow is imported: afterwards it changes nothing. ``TF_ENABLE_ONEDNN_OPTS=0`` keeps
    them off.

    >>> prefer_onednn(); os.environ["TF_ENABLE_ONEDNN_OPTS"] in ("0", "1")
    True
    """
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def import_tensorflow():
    """Import TensorFlow and Keras on Keras' TensorFlow back end, quietly; return ``tf``.

    Raises :class:`TrainingError` when Keras runs on another back end.

    >>> import_tensorflow().__name__
    'tensorflow'
    """
    started = "tensorflow" in sys.modules and "keras" in sys.modules
    if "tensorflow" not in sys.modules:
        prefer_onednn()
    if "keras" not in sys.modules:
        backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        if backend != "tensorflow":
            raise TrainingError(f"it trains with tf.distribute on Keras' TensorFlow back end; "
                                f"unset KERAS_BACKEND (it is {backend!r}) to run it")
    with contextlib.nullcontext() if started else startup_lines_hidden():
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415

        if not started:
            tf.config.list_physical_devices()  # where CUDA reports that it found no driver
    if keras.backend.backend() != "tensorflow":
        raise TrainingError(f"it trains with tf.distribute on Keras' TensorFlow back end, and "
                            f"Keras runs on {keras.backend.backend()!r}; unset KERAS_BACKEND "
                            "to run it")
    return tf

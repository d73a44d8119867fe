"""Train a kresnet ResNet on real data, with checkpoints that survive and tf.distribute.

    python scripts/train.py --model resnet18 --config stem=cifar --width 32   # digits, 10 epochs
    python scripts/train.py --dataset cifar10:cifar-10-python.tar.gz --augment crop-flip ...
    python scripts/train.py --dataset folder:photos --image-size 128 --model resnet50
    python scripts/train.py --out runs/a --resume          # continue a run that was killed
    kresnet train ...                                      # the same, from a source checkout

``--out`` receives ``history.csv``, ``curves.png`` (loss and accuracy, train and validation),
``best.keras`` (the epoch with the best validation accuracy), ``metrics.json`` (test accuracy
and the run's settings) and ``checkpoints/`` (the last complete epoch, written atomically, and
``latest.json`` pointing at it). The saved models start with a ``Normalization`` layer holding
the training set's per-channel mean and variance, so they take raw pixel values.

This script, not the ``kresnet`` package, uses TensorFlow directly (``tf.data``,
``tf.distribute``): the package itself stays back-end independent. See docs/training.md.
"""

import argparse
import ast
import csv
import hashlib
import io
import json
import os
import pickle
import re
import sys
import tarfile
import time
import zlib

# tf.data and tf.distribute need Keras' TensorFlow back end (the models need no particular one).
if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
    sys.exit(f"train.py: error: it trains with tf.distribute on Keras' TensorFlow back end; "
             f"unset KERAS_BACKEND (it is {os.environ['KERAS_BACKEND']!r}) to run it")

import keras
import numpy as np
import tensorflow as tf

import kresnet
from kresnet import files as kfiles

#: Held out of every data set's training images, with the fixed seed SPLIT_SEED.
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2  # digits and folder: (CIFAR-10 has its own test batch)
SPLIT_SEED = 0
CIFAR_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_FOLDER = "cifar-10-batches-py"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' loader reads
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1, "rmsprop": 1e-3}
SCHEDULES = ("plateau", "cosine", "constant")
AUGMENTS = ("auto", "none", "crop", "crop-flip")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
#: What a resumed run must repeat: the model, data, optimizer and schedule of the first call.
#: (--epochs may grow; --strategy, --cpu-replicas, --verbose and --out are free.)
RESUME_FIXED = ("model", "config", "width", "dataset", "image_size", "limit", "batch_size",
                "optimizer", "lr", "momentum", "weight_decay", "schedule", "patience", "augment",
                "mixed_precision", "seed")
HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


class TrainingError(Exception):
    """Bad input to the script: printed as one line, exit status 2."""


# -- arguments ------------------------------------------------------------------------------

def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value
    return parse


def _config_item(text):
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"not KEY=VALUE: {text!r} (for example stem=cifar or widths=32,64,128,256)")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a bare word such as cifar is a string
    return key, value


def _image_size(text):
    parts = text.lower().replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"not an image size: {text!r} (write 128 or 96,128)")
    return size


def parser():
    p = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--model", default="resnet18",
        help="a preset of kresnet.PRESETS, or create_resnet (the tutorial's model)")
    add("--config", action="append", type=_config_item, default=[], metavar="KEY=VALUE",
        help="an option of kresnet.build / create_resnet, repeatable: stem=cifar, "
             "widths=32,64,128,256, zero_init_residual=True, depth=18 ...")
    add("--width", type=_positive(int),
        help="base width: stages of W, 2W, 4W, 8W filters and a stem of W")
    add("--dataset", default="digits", help="digits, cifar10:PATH or folder:PATH")
    add("--image-size", type=_image_size,
        help="folder:PATH images are resized to this (default 224; digits and cifar10 are 32)")
    add("--limit", type=_positive(int), help="use at most this many training images")
    add("--epochs", type=_positive(int), default=10)
    add("--batch-size", type=_positive(int), default=64,
        help="global batch, split evenly across replicas")
    add("--optimizer", choices=OPTIMIZERS, default="adam")
    add("--lr", type=_positive(float), help="learning rate (default: 0.1 for sgd, else 1e-3)")
    add("--momentum", type=float, default=0.9, help="sgd and rmsprop momentum")
    add("--weight-decay", type=float, default=0.0,
        help="decoupled for adamw; otherwise the paper's L2 (kresnet's weight_decay)")
    add("--schedule", choices=SCHEDULES, default="cosine",
        help="plateau: halve the rate after 2 epochs without validation progress; "
             "cosine: cosine decay to 0 over all epochs")
    add("--patience", type=int, default=0,
        help="stop after this many epochs without validation progress (0: never)")
    add("--augment", choices=AUGMENTS, default="auto",
        help="crop: pad by 1/8 and crop back at random; crop-flip: and mirror at random; "
             "auto: crop for digits, crop-flip otherwise")
    add("--mixed-precision", action="store_true",
        help="float16 compute on GPUs, bfloat16 on CPUs (weights stay float32)")
    add("--seed", type=int, default=0, help="initial weights, data order and augmentation")
    add("--out", default="runs/train", help="folder for the run's files")
    add("--resume", action="store_true",
        help="continue from --out's last checkpoint (start afresh if it has none)")
    add("--strategy", choices=STRATEGIES, default="auto",
        help="auto: multiworker if TF_CONFIG names several tasks, mirrored if there are "
             "several GPUs or --cpu-replicas > 1, else one device")
    add("--cpu-replicas", type=_positive(int), default=1,
        help="without GPUs, split the CPU into this many logical devices for mirrored")
    add("--verbose", type=int, choices=(0, 1, 2), default=None,
        help="Keras' progress output: 1 bars, 2 a line per epoch (default: 1 on a terminal)")
    return p


# -- data sets ------------------------------------------------------------------------------

class Data:
    """Training, validation and test images with labels, and what the model needs to know."""

    def __init__(self, name, train, val, test, classes, image_shape):
        self.name, self.train, self.val, self.test = name, train, val, test
        self.classes, self.image_shape = classes, image_shape

    def sizes(self):
        return tuple(_count(part) for part in (self.train, self.val, self.test))


class Files:
    """Image files with their labels; tf.data reads, decodes and resizes them when used."""

    def __init__(self, paths, labels, size):
        self.paths = np.asarray(paths, dtype=str)
        self.labels = np.asarray(labels, dtype="int64")
        self.size = tuple(size)

    def __getitem__(self, part):
        return Files(self.paths[part], self.labels[part], self.size)


def read_image(path, size):
    """What Keras' image_dataset_from_directory does to a file: decode as RGB, resize."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, size)
    image.set_shape(tuple(size) + (3,))
    return image


def _count(part):
    return len(part[1]) if isinstance(part, tuple) else len(part.labels)


def as_dataset(part):
    """(float32 image, int64 label) pairs of a part, in its order."""
    if isinstance(part, tuple):
        return tf.data.Dataset.from_tensor_slices((part[0], part[1])).map(
            lambda x, y: (tf.cast(x, "float32"), y))
    return tf.data.Dataset.from_tensor_slices((part.paths, part.labels)).map(
        lambda path, y: (read_image(path, part.size), y), num_parallel_calls=tf.data.AUTOTUNE)


def _split(n, fractions, seed=SPLIT_SEED):
    """Indices of a fixed-seed shuffle cut into len(fractions) + 1 parts (the rest first)."""
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(n * f)) for f in fractions]
    cuts = np.cumsum([n - sum(sizes)] + sizes)[:-1]
    return np.split(order, cuts)


def load_digits():
    """scikit-learn's 1,797 8x8 digits (values 0-16), 4x nearest upsampling to 32x32x1."""
    from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415

    data = sklearn_digits()
    x = np.repeat(np.repeat(data.images.astype("float32"), 4, 1), 4, 2)[..., None]
    y = data.target.astype("int64")
    train, val, test = _split(len(x), (VALIDATION_FRACTION, TEST_FRACTION))
    return Data("digits", (x[train], y[train]), (x[val], y[val]), (x[test], y[test]), 10,
                (32, 32, 1))


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a CIFAR batch cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
               ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("_codecs", "encode"),
               ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(raw, where):
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise TrainingError(f"{where} is not a CIFAR-10 python batch: {error}") from None
    if not isinstance(batch, dict):
        raise TrainingError(f"{where} is not a CIFAR-10 python batch: it holds a "
                            f"{type(batch).__name__}, not a dict")
    keys = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data", "labels") if k not in keys]
    if missing:
        raise TrainingError(f"{where} is not a CIFAR-10 python batch: it has no "
                            f"{' or '.join(missing)} entry")
    data = np.asarray(keys["data"])
    labels = np.asarray(keys["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise TrainingError(f"{where}: 'data' must be uint8 rows of 3,072 values (3x32x32), "
                            f"got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or labels.size and not (0 <= labels.min() <= labels.max() <= 9):
        raise TrainingError(f"{where}: 'labels' must be {len(data)} integers 0-9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype("int64")


def load_cifar10(path):
    """The CIFAR-10 python version: ``cifar-10-python.tar.gz`` or its extracted folder."""
    where = os.path.expanduser(path)
    if not os.path.exists(where):
        raise TrainingError(f"cifar10: no file or folder at {path!r} (give the path of "
                            "cifar-10-python.tar.gz or of its extracted cifar-10-batches-py)")
    members = {}
    if os.path.isdir(where):
        folder = os.path.join(where, CIFAR_FOLDER)
        folder = folder if os.path.isdir(folder) else where
        for member in CIFAR_MEMBERS:
            file = os.path.join(folder, member)
            if not os.path.isfile(file):
                raise TrainingError(f"cifar10: {file!r} is missing (the python version of "
                                    f"CIFAR-10 holds {', '.join(CIFAR_MEMBERS)})")
            with open(file, "rb") as handle:
                members[member] = (handle.read(), file)
    else:
        try:
            with tarfile.open(where) as archive:
                names = {m.name.lstrip("./"): m for m in archive.getmembers() if m.isfile()}
                for member in CIFAR_MEMBERS:
                    entry = names.get(f"{CIFAR_FOLDER}/{member}")
                    if entry is None:
                        raise TrainingError(
                            f"cifar10: archive {path!r} has no {CIFAR_FOLDER}/{member} (the "
                            f"python version holds {CIFAR_FOLDER}/ with "
                            f"{', '.join(CIFAR_MEMBERS)})")
                    members[member] = (archive.extractfile(entry).read(),
                                       f"{path}:{CIFAR_FOLDER}/{member}")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise TrainingError(f"cifar10: {path!r} is not a readable tar archive: "
                                f"{error}") from None
    parts = [_cifar_batch(raw, repr(name)) for raw, name in members.values()]
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    train, val = _split(len(x), (VALIDATION_FRACTION,))
    return Data("cifar10", (x[train], y[train]), (x[val], y[val]), parts[5], 10, (32, 32, 3))


def _class_images(path):
    """``{class: [image files]}`` of an image folder, checked: every class holds images."""
    if not os.path.isdir(path):
        raise TrainingError(f"folder: no folder at {path!r} (it should hold one sub-folder "
                            "of images per class)")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if len(classes) < 2:
        raise TrainingError(f"folder: {path!r} has {len(classes)} class sub-folder(s); it "
                            "needs one per class, at least two, each holding images")
    found = {}
    for name in classes:
        files = sorted(os.path.join(root, f) for root, _, names in
                       os.walk(os.path.join(path, name)) for f in names
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise TrainingError(f"folder: class folder {os.path.join(path, name)!r} holds no "
                                f"images ({', '.join(IMAGE_EXTENSIONS)})")
        found[name] = files
    return found


def _check_images(files):
    """Decode every image once, so that a corrupt one is named before training starts."""
    for file in files:
        try:
            tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            raise TrainingError(f"folder: cannot decode image {file!r}: {reason}") from None


def load_folder(path, image_size):
    """One sub-folder per class; 70/10/20 train/validation/test by a fixed-seed shuffle.

    Keras' ``image_dataset_from_directory`` finds the classes and makes the split; the
    training files are then read in an order of our own (by seed and epoch, as for the
    in-memory sets) and the held-out files, in Keras' fixed order, are cut in two.
    """
    path = os.path.expanduser(path)
    found = _class_images(path)
    files = [f for names in found.values() for f in names]
    _check_images(files)
    held_out = round(VALIDATION_FRACTION + TEST_FRACTION, 6)
    if int(len(files) * held_out) < 2:  # Keras holds out int(n * split) files
        raise TrainingError(f"folder: {path!r} holds {len(files)} images, too few to split "
                            "into training, validation and test sets")
    train, rest = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", class_names=list(found), batch_size=None,
        image_size=image_size, shuffle=True, seed=SPLIT_SEED, validation_split=held_out,
        subset="both", verbose=False)
    index = {name: i for i, name in enumerate(found)}

    def files_of(paths):
        labels = [index[os.path.relpath(p, path).split(os.sep)[0]] for p in paths]
        return Files(paths, labels, image_size)

    rest = files_of(rest.file_paths)
    n_val = max(1, int(round(len(rest.paths) * VALIDATION_FRACTION / held_out)))
    data = Data(f"folder:{path}", files_of(train.file_paths), rest[:n_val], rest[n_val:],
                len(found), tuple(image_size) + (3,))
    data.class_names = list(found)
    return data


def load_data(spec, image_size):
    kind, sep, path = spec.partition(":")
    if kind == "digits" and not sep:
        if image_size is not None:
            raise TrainingError("--image-size applies to folder:PATH only (digits are 32x32)")
        return load_digits()
    if kind == "cifar10" and path:
        if image_size is not None:
            raise TrainingError("--image-size applies to folder:PATH only (CIFAR-10 is 32x32)")
        return load_cifar10(path)
    if kind == "folder" and path:
        return load_folder(path, image_size or (224, 224))
    raise TrainingError(f"--dataset must be digits, cifar10:PATH or folder:PATH; got {spec!r}")


def limit(data, n):
    """Keep the first ``n`` training images (the split already shuffled them)."""
    if n is not None:
        data.train = tuple(a[:n] for a in data.train) if isinstance(data.train, tuple) \
            else data.train[:n]
    return data


def channel_moments(train, samples=10000):
    """Per-channel mean and variance of the first ``samples`` training images."""
    if isinstance(train, tuple):
        x = train[0][:samples].astype("float64")
    else:
        x = np.stack([image.numpy() for image, _ in as_dataset(train[:samples])])
        x = x.astype("float64")
    axes = tuple(range(x.ndim - 1))
    return x.mean(axis=axes), np.maximum(x.var(axis=axes), 1e-6)


# -- input pipelines ------------------------------------------------------------------------

def augmentation(kind, image_shape):
    """A per-image function of (image, seed) for tf.data; ``None`` for no augmentation."""
    if kind == "none":
        return None
    height, width = image_shape[:2]
    pad = max(1, height // 8), max(1, width // 8)

    def augment(image, seed):
        padded = tf.pad(image, [[pad[0]] * 2, [pad[1]] * 2, [0, 0]])
        image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)
        if kind == "crop-flip":
            image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1])
        return image
    return augment


def train_stream(train, batch, seed, first_epoch, epochs, augment):
    """Batches of epochs ``first_epoch`` .. ``epochs - 1``, and the steps of one epoch.

    An epoch's order and augmentation depend on the seed and the epoch number only, so a
    resumed run sees the batches that an uninterrupted one would have seen.
    """
    n = _count(train)
    if isinstance(train, tuple):
        images, labels = tf.constant(train[0]), tf.constant(train[1])

        def item(i):
            return tf.cast(images[i], "float32"), labels[i]
    else:
        paths, labels, size = tf.constant(train.paths), tf.constant(train.labels), train.size

        def item(i):
            return read_image(paths[i], size), labels[i]

    def epoch(e):
        key = tf.stack([tf.constant(seed, tf.int64), e])
        order = tf.cast(tf.argsort(tf.random.stateless_uniform([n], seed=key)), tf.int64)
        ds = tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: (i, item(i)), num_parallel_calls=tf.data.AUTOTUNE)
        if augment is not None:
            ds = ds.map(lambda i, xy: (i, (augment(xy[0], tf.stack([e, i])), xy[1])),
                        num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(lambda i, xy: xy).batch(batch, drop_remainder=True)

    stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch)
    return _sharded(stream).prefetch(tf.data.AUTOTUNE), n // batch


def eval_stream(part, batch):
    return _sharded(as_dataset(part).batch(batch)).prefetch(tf.data.AUTOTUNE)


def _sharded(dataset):
    # Several workers each take every n-th batch element (the data is in memory on each).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# -- strategy -------------------------------------------------------------------------------

def cluster_config():
    """(TF_CONFIG as a dict, number of tasks, this task's name, whether it is the chief)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text:
        return None, 1, "chief", True
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        tasks = sum(len(v) for k, v in cluster.items() if k in ("chief", "worker"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise TrainingError(f"TF_CONFIG is not a valid cluster description: {error}") from None
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return config, tasks, f"{kind}-{index}", chief


def make_strategy(name, cpu_replicas):
    """Set up devices (before TensorFlow starts its runtime) and return (strategy, kind)."""
    config, tasks, _, _ = cluster_config()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = ("multiworker" if tasks > 1 else
                "mirrored" if len(gpus) > 1 or (not gpus and cpu_replicas > 1) else "one")
    if cpu_replicas > 1 and name == "one":
        raise TrainingError("--cpu-replicas needs --strategy mirrored, multiworker or auto")
    if cpu_replicas > 1 and gpus:
        raise TrainingError("--cpu-replicas applies to machines without GPUs; with GPUs, "
                            "mirrored uses every GPU")
    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
    if name == "multiworker":
        if config is None:
            raise TrainingError("--strategy multiworker needs TF_CONFIG (see docs/training.md)")
        return tf.distribute.MultiWorkerMirroredStrategy(), name
    if name == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices), name
    return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0"), name


def patch_keras_for_multiworker(model, example):
    """Work around keras-team/keras#20585 (Keras 3 ``fit`` under MultiWorkerMirroredStrategy).

    Keras 3.15 (1) reduces a whole distributed (x, y) batch with ``strategy.reduce`` just to
    learn its shapes, which that strategy cannot do for a tuple, and (2) averages every
    per-replica log value over axis 0, which fails for the scalar loss and accuracy. We give
    (1) a local batch of the right shapes and make (2) average scalars over replicas only.
    """
    from keras.src.backend.tensorflow import trainer  # noqa: PLC0415

    needed = ("reduce_per_replica", "_collective_all_reduce_multi_worker")
    if not all(hasattr(trainer, n) for n in needed) or \
            not hasattr(type(model), "_maybe_symbolic_build"):
        raise TrainingError("this Keras version changed the internals that multiworker "
                            "training works around (tested with Keras 3.15)")
    cls = type(model)
    model._maybe_symbolic_build = (lambda iterator=None, data_batch=None: cls._maybe_symbolic_build(
        model, data_batch=example if data_batch is None else data_batch))
    if getattr(trainer.reduce_per_replica, "kresnet_patched", False):
        return
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.kresnet_patched = True
    trainer.reduce_per_replica = reduce_per_replica


# -- the model ------------------------------------------------------------------------------

def model_options(args, stages, preset_stem=None):
    options = dict(args.config)
    if args.width is not None:
        if "widths" in options or "stem_width" in options:
            raise TrainingError("give --width or --config widths=/stem_width=, not both")
        options["widths"] = tuple(args.width * 2 ** i for i in range(stages))
        deep = options.get("stem", preset_stem) == "deep"
        options["stem_width"] = (args.width // 2, args.width // 2, args.width) if deep \
            else args.width
    return options


def build_model(args, data, mean, variance):
    """The ResNet behind a Normalization layer holding the training set's moments."""
    inputs = keras.Input(data.image_shape, name="input")
    x = keras.layers.Normalization(mean=mean.tolist(), variance=variance.tolist(),
                                   name="normalize")(inputs)
    config = args.config_dict
    if args.model == "create_resnet":
        row = kresnet.DEPTHS.get(config.get("depth", 50))  # a bad depth: create_resnet says so
        blocks = config.get("blocks") or (row.blocks if row else (0,) * 4)
        return kresnet.create_resnet(data.image_shape, data.classes, input_tensor=x,
                                     **model_options(args, len(blocks)))
    preset = kresnet.PRESETS[args.model]
    blocks = config.get("blocks") or preset.options.get("blocks") or \
        kresnet.DEPTHS[preset.depth].blocks
    return kresnet.build(args.model, input_tensor=x, classes=data.classes,
                         **model_options(args, len(blocks), preset.options.get("stem")))


def make_optimizer(args, steps_per_epoch):
    lr = args.lr or DEFAULT_LR[args.optimizer]
    if args.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, args.epochs * steps_per_epoch)
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=args.momentum, nesterov=False)
    if args.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, momentum=args.momentum)
    if args.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=args.weight_decay)
    return keras.optimizers.Adam(lr)


def weights_digest(model):
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


# -- callbacks ------------------------------------------------------------------------------

def _resumable(base, keys):
    """``base`` (a Keras callback) whose counters survive a restart."""

    class Resumable(base):
        def __init__(self, *args, restore=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.restore = restore or {}

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)  # resets the counters; then put ours back
            for key, value in self.restore.items():
                setattr(self, key, value)

        def state(self):
            return {k: (None if getattr(self, k) is None else float(getattr(self, k)))
                    for k in keys}

    Resumable.__name__ = f"Resumable{base.__name__}"
    return Resumable


def callbacks(args, model, strategy, run, is_chief):
    found = []
    if strategy.num_replicas_in_sync > 1:
        found.append(SyncMovingStatistics(strategy, model))
    saved = run.state.get("callbacks", {})
    if args.schedule == "plateau":
        plateau = _resumable(keras.callbacks.ReduceLROnPlateau,
                             ("wait", "best", "cooldown_counter"))
        found.append(plateau(monitor="val_accuracy", mode="max", factor=0.5, patience=2,
                             min_lr=1e-6, restore=saved.get("plateau"), verbose=0))
        run.stateful["plateau"] = found[-1]
    if args.patience:
        stopping = _resumable(keras.callbacks.EarlyStopping, ("wait", "best", "best_epoch"))
        found.append(stopping(monitor="val_accuracy", mode="max", patience=args.patience,
                              restore=saved.get("early_stopping")))
        run.stateful["early_stopping"] = found[-1]
    found.append(Checkpointer(run, is_chief))
    return found


class SyncMovingStatistics(keras.callbacks.Callback):
    """Average batch-norm moving statistics over replicas at each epoch's end.

    Keras 3 keeps one copy of a moving mean or variance per replica (aggregation
    ``NONE``), each updated from its own replica's batches only, and saves the first.
    Averaging them makes every replica, and every worker, hold the same model; it runs
    before validation and before the epoch's checkpoint.
    """

    def __init__(self, strategy, model):
        super().__init__()
        variables = [v for layer in model.layers
                     if isinstance(layer, keras.layers.BatchNormalization)
                     for v in (layer.moving_mean, layer.moving_variance)]

        def replica():
            context = tf.distribute.get_replica_context()
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                       [tf.identity(v.value) for v in variables])
            for variable, mean in zip(variables, means):
                variable.value.assign(mean)

        self.sync = tf.function(lambda: strategy.run(replica))

    def on_test_begin(self, logs=None):
        self.sync()

    def on_epoch_end(self, epoch, logs=None):
        self.sync()


class Run:
    """What a run keeps on disk in ``--out`` and how it writes it (atomically)."""

    def __init__(self, out):
        self.out = out
        self.checkpoints = os.path.join(out, CHECKPOINTS)
        self.state = {"epoch": 0, "history": [], "callbacks": {}, "best": None}
        self.stateful = {}
        self.title = ""  # of the curves: model and data set

    def path(self, *names):
        return os.path.join(self.out, *names)

    def latest(self):
        """The last complete checkpoint's state, or None."""
        pointer = os.path.join(self.checkpoints, LATEST)
        if not os.path.exists(pointer):
            return None
        try:
            with open(pointer) as handle:
                state = json.load(handle)
            checkpoint = os.path.join(self.checkpoints, state["checkpoint"])
        except (ValueError, KeyError, TypeError) as error:
            raise TrainingError(f"{pointer!r} is damaged ({error}); move it away to start "
                                "afresh") from None
        if not os.path.isfile(checkpoint):
            raise TrainingError(f"{pointer!r} names {checkpoint!r}, which is missing; move "
                                f"{self.checkpoints!r} away to start afresh")
        state["checkpoint_path"] = checkpoint
        return state

    def remove_leftovers(self):
        """Temporary files of a process killed while writing; never a complete file."""
        for folder in (self.out, self.checkpoints):
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if kfiles.TEMPORARY.match(name):
                        os.remove(os.path.join(folder, name))

    def write_text(self, name, text):
        kfiles.write_bytes(self.path(name), text.encode())

    def write_history(self):
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in self.state["history"]:
            writer.writerow({k: _plain(row.get(k)) for k in HISTORY_FIELDS})
        self.write_text("history.csv", buffer.getvalue())


def _plain(value):
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else value


class Checkpointer(keras.callbacks.Callback):
    """Each epoch: history row; on the chief, best.keras, the checkpoint, curves."""

    def __init__(self, run, is_chief):
        super().__init__()
        self.run, self.is_chief = run, is_chief

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        # The rate this epoch starts with (a plateau cut at its end applies to the next).
        self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        run, state = self.run, self.run.state
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
               "seconds": time.time() - self.started}
        row["lr"] = self.lr
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["callbacks"] = {k: c.state() for k, c in run.stateful.items()}
        state["stopped"] = bool(self.model.stop_training)  # set by EarlyStopping before us
        best = state["best"]
        improved = best is None or row.get("val_accuracy", 0.0) > best["val_accuracy"]
        if improved:
            state["best"] = {"epoch": epoch + 1, "val_accuracy": row.get("val_accuracy", 0.0)}
        if not self.is_chief:
            return
        if improved:
            kresnet.save(self.model, run.path("best.keras"))
        name = f"epoch-{epoch + 1:04d}.keras"
        kresnet.save(self.model, os.path.join(run.checkpoints, name))
        state["checkpoint"] = name
        kfiles.write_bytes(os.path.join(run.checkpoints, LATEST),
                         json.dumps(state, indent=1).encode())
        for old in os.listdir(run.checkpoints):  # only after the pointer moved on
            if re.fullmatch(r"epoch-\d+\.keras", old) and old != name:
                os.remove(os.path.join(run.checkpoints, old))
        run.write_history()
        draw_curves(state["history"], run.path("curves.png"), run.title)


def draw_curves(history, path, title=""):
    """Loss and accuracy, training and validation, per epoch, as a PNG (needs matplotlib)."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError:
        return None
    epochs = [row["epoch"] for row in history]
    figure, axes = pyplot.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [row.get(prefix + metric) for row in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    kfiles.write_bytes(path, buffer.getvalue())
    return path


# -- main -----------------------------------------------------------------------------------

def check_args(args):
    if args.patience < 0:
        raise TrainingError(f"--patience must be 0 or more; got {args.patience}")
    if args.weight_decay < 0:
        raise TrainingError(f"--weight-decay must be 0 or more; got {args.weight_decay}")
    if not 0 <= args.momentum < 1:
        raise TrainingError(f"--momentum must be in [0, 1); got {args.momentum}")
    if args.model != "create_resnet" and args.model not in kresnet.PRESETS:
        raise TrainingError(f"--model must be create_resnet or one of the presets: "
                            f"{', '.join(kresnet.PRESETS)}; got {args.model!r}")
    args.config_dict = dict(args.config)
    if args.weight_decay and args.optimizer != "adamw":
        if "weight_decay" in args.config_dict:
            raise TrainingError("give --weight-decay or --config weight_decay=, not both")
        args.config.append(("weight_decay", args.weight_decay))
        args.config_dict["weight_decay"] = args.weight_decay
    args.augment = args.augment if args.augment != "auto" else (
        "crop" if args.dataset == "digits" else "crop-flip")


def fixed_args(args):
    """The arguments a resumed run must repeat, as JSON would store them, and --epochs."""
    fixed = {key: getattr(args, key) for key in RESUME_FIXED + ("epochs",)}
    return json.loads(json.dumps(fixed))


def check_resume(args, previous):
    """The epoch to resume from, after checking that ``args`` continue ``previous``'s run."""
    if previous.get("stopped"):
        raise TrainingError(f"{args.out!r} stopped early at epoch {previous['epoch']} "
                            f"(--patience {previous['args']['patience']}); nothing to resume")
    if previous["epoch"] >= args.epochs:
        raise TrainingError(f"{args.out!r} already finished {previous['epoch']} epochs; "
                            "raise --epochs above it to train on")
    now = fixed_args(args)
    for key in RESUME_FIXED:
        if key in previous["args"] and previous["args"][key] != now[key]:
            option = "--" + key.replace("_", "-")
            raise TrainingError(f"{args.out!r} was started with {option} "
                                f"{previous['args'][key]!r}, this call has {now[key]!r}: a "
                                "resumed run keeps its settings (repeat them, or use a new "
                                "--out)")
    return previous["epoch"]


def same_on_every_worker(strategy, value):
    """Whether every replica of every worker holds the same number ``value``."""
    stats = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([float(value), float(value) ** 2, 1.0]))
    total, squares, count = strategy.reduce("SUM", stats, axis=None).numpy()
    return abs(squares * count - total ** 2) <= 1e-6 * max(1.0, total ** 2)


def train(args):
    """Run training as ``args`` says; return the metrics dict written to metrics.json."""
    check_args(args)
    run = Run(args.out)
    previous = run.latest()
    if previous is not None and not args.resume:
        raise TrainingError(f"{args.out!r} already holds a run (checkpoint of epoch "
                            f"{previous['epoch']}): pass --resume to continue it, or choose "
                            "another --out")
    first_epoch = 0 if previous is None else check_resume(args, previous)
    strategy, kind = make_strategy(args.strategy, args.cpu_replicas)
    replicas = strategy.num_replicas_in_sync
    if args.batch_size % replicas:
        raise TrainingError(f"--batch-size {args.batch_size} must be a multiple of the "
                            f"{replicas} replicas, so that each gets the same share")
    _, tasks, task, is_chief = cluster_config()
    if is_chief:
        run.remove_leftovers()
    else:  # checkpoints are the chief's; the others report in a folder of their own
        run.out = os.path.join(args.out, task)
    if args.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")
    data = limit(load_data(args.dataset, args.image_size), args.limit)
    n_train = _count(data.train)
    if n_train < args.batch_size:
        raise TrainingError(f"--batch-size {args.batch_size} is larger than the "
                            f"{n_train} training images")
    keras.utils.set_random_seed(args.seed)
    if kind == "multiworker" and not same_on_every_worker(strategy, first_epoch):
        raise TrainingError("the workers would start from different epochs: with --resume, "
                            "--out must be storage that every worker reads (the chief's "
                            "checkpoint)")
    run.state["args"] = fixed_args(args)
    run.title = f"{args.model} on {data.name}"
    with strategy.scope():
        if previous is not None:
            try:
                model = keras.saving.load_model(previous["checkpoint_path"])
            except Exception as error:  # noqa: BLE001 - any failure means a bad checkpoint
                raise TrainingError(f"cannot load the checkpoint {previous['checkpoint_path']!r}"
                                    f": {str(error).splitlines()[0]}") from None
            run.state.update({k: previous[k] for k in ("epoch", "history", "callbacks", "best")})
        else:
            mean, variance = channel_moments(data.train)
            try:
                model = build_model(args, data, mean, variance)
            except (TypeError, ValueError, KeyError) as error:
                raise TrainingError(f"--model {args.model} with --config/--width: "
                                    f"{error}") from None
        augment = augmentation(args.augment, data.image_shape)
        train_ds, steps = train_stream(data.train, args.batch_size, args.seed, first_epoch,
                                       args.epochs, augment)
        if first_epoch == 0:
            model.compile(optimizer=make_optimizer(args, steps),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        elif args.schedule == "cosine" and args.epochs != previous["args"]["epochs"]:
            # The decay was laid out over the old number of epochs: lay it over the new one.
            model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
                args.lr or DEFAULT_LR[args.optimizer], args.epochs * steps)
            print(f"cosine schedule now spans {args.epochs} epochs (was "
                  f"{previous['args']['epochs']})", flush=True)
    if kind == "multiworker":
        example = (np.zeros((1,) + data.image_shape, "float32"), np.zeros((1,), "int64"))
        patch_keras_for_multiworker(model, example)
    val_ds = eval_stream(data.val, args.batch_size)
    test_ds = eval_stream(data.test, args.batch_size)
    sizes = data.sizes()
    print(f"{model.name}: {model.count_params():,} parameters; {data.name}: "
          f"{sizes[0]:,} train, {sizes[1]:,} validation, {sizes[2]:,} test images; "
          f"strategy {kind} with {replicas} replica(s), global batch {args.batch_size}"
          + (f"; resuming after epoch {first_epoch} (optimizer step "
             f"{int(keras.ops.convert_to_numpy(model.optimizer.iterations))})"
             if first_epoch else ""), flush=True)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    started = time.time()
    model.fit(train_ds, epochs=args.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
              validation_data=val_ds, callbacks=callbacks(args, model, strategy, run, is_chief),
              verbose=verbose if is_chief else 0, shuffle=False)
    seconds = time.time() - started
    final_loss, final_accuracy = model.evaluate(test_ds, verbose=0)
    metrics = {"final_test_accuracy": float(final_accuracy), "final_test_loss": float(final_loss)}
    if is_chief:
        if not os.path.exists(run.path("best.keras")):  # removed by hand since it was written
            kresnet.save(model, run.path("best.keras"))
        best = keras.saving.load_model(run.path("best.keras"))
        best.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        test_loss, test_accuracy = best.evaluate(eval_stream(data.test, args.batch_size),
                                                 verbose=0)
        metrics.update(test_accuracy=float(test_accuracy), test_loss=float(test_loss))
    history = run.state["history"]
    metrics.update({
        "best_epoch": run.state["best"]["epoch"] if run.state["best"] else None,
        "best_val_accuracy": run.state["best"]["val_accuracy"] if run.state["best"] else None,
        "epochs": len(history), "train_seconds_this_process": round(seconds, 1),
        "train_seconds_all_epochs": round(sum(r["seconds"] for r in history), 1),
        "model": model.name, "parameters": int(model.count_params()),
        "dataset": data.name, "images": dict(zip(("train", "validation", "test"), sizes)),
        "strategy": kind, "replicas": replicas, "workers": tasks,
        "global_batch_size": args.batch_size, "weights_sha256": weights_digest(model),
        "args": {k: v for k, v in vars(args).items() if k != "config_dict"},
    })
    os.makedirs(run.out, exist_ok=True)
    run.write_text("metrics.json", json.dumps(metrics, indent=1, default=str) + "\n")
    if is_chief:
        print(f"test accuracy {metrics['test_accuracy']:.2%} (best.keras, epoch "
              f"{metrics['best_epoch']}); final weights {final_accuracy:.2%}; "
              f"{metrics['train_seconds_all_epochs']:.0f} s of training; wrote "
              f"{os.path.join(args.out, 'metrics.json')}", flush=True)
    return metrics


def main(argv=None):
    args = parser().parse_args(argv)
    policy = keras.config.dtype_policy()
    try:
        train(args)
    except TrainingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    finally:  # --mixed-precision sets a global policy; leave the caller's in place
        keras.config.set_dtype_policy(policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The data sets of ``kresnet train``: digits, ``cifar10:PATH`` and ``folder:PATH``.

Each loads into a :class:`Data` of three parts (training, validation, test). A part is an
:class:`Arrays` (images in memory) or a :class:`Files` (image files, read by tf.data when
used); both have the interface of :class:`Part`: ``len(part)``, ``part[:n]`` and
``part.dataset()``. The splits use the fixed seed :data:`SPLIT_SEED`, so they never change.

TensorFlow and Keras are imported inside the functions that need them (decoding images,
building a tf.data pipeline), so importing this module does not start TensorFlow.
"""

import dataclasses
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from kresnet.training.settings import TrainingError

#: Held out of every data set's training images, with the fixed seed SPLIT_SEED.
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2  # digits and folder: (CIFAR-10 has its own test batch)
SPLIT_SEED = 0
CIFAR_MEMBERS = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_FOLDER = "cifar-10-batches-py"
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what Keras' loader reads


# -- parts: one interface for images in memory and image files ------------------------------

class Part:
    """Images with integer labels, in a fixed order: a training, validation or test set.

    ``len(part)`` counts the images, ``part[a:b]`` (or ``part[indices]``, an array of
    indices) is a part of the same kind, and ``part.dataset()`` gives tf.data pairs of a
    float32 image and an int64 label. Subclasses set ``labels`` and define ``_take``,
    ``dataset`` and ``array``.
    """

    labels = np.zeros((0,), "int64")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) or not isinstance(index, (slice, np.ndarray,
                                                                           list)):
            raise TypeError(f"a {type(self).__name__} takes a slice or an array of indices, "
                            f"not {type(index).__name__}")
        return self._take(index)

    def _take(self, index):
        raise NotImplementedError

    def dataset(self, order=None):
        """tf.data (float32 image, int64 label) pairs; ``order``: an int64 tensor of indices
        to read in that order (default: the part's own order)."""
        raise NotImplementedError

    def array(self):
        """Every image of the part as one float64 numpy array (decoded if need be)."""
        raise NotImplementedError


class Arrays(Part):
    """Images and labels held in memory (digits, CIFAR-10).

    >>> part = Arrays(np.zeros((5, 4, 4, 1), "uint8"), [0, 1, 2, 3, 4])
    >>> len(part), len(part[:3]), part[:3].labels.tolist()
    (5, 3, [0, 1, 2])
    """

    def __init__(self, images, labels):
        self.images = np.asarray(images)
        self.labels = np.asarray(labels, dtype="int64")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def _take(self, index):
        return Arrays(self.images[index], self.labels[index])

    def dataset(self, order=None):
        import tensorflow as tf  # noqa: PLC0415

        if order is None:
            return tf.data.Dataset.from_tensor_slices((self.images, self.labels)).map(
                lambda x, y: (tf.cast(x, "float32"), y))
        images, labels = tf.constant(self.images), tf.constant(self.labels)
        return tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: (tf.cast(images[i], "float32"), labels[i]),
            num_parallel_calls=tf.data.AUTOTUNE)

    def array(self):
        return self.images.astype("float64")


class Files(Part):
    """Image files with their labels; tf.data reads, decodes and resizes them when used.

    >>> part = Files(["a.png", "b.png", "c.png"], [0, 1, 1], (16, 16))
    >>> len(part), part[1:].paths.tolist(), part[1:].size
    (3, ['b.png', 'c.png'], (16, 16))
    """

    def __init__(self, paths, labels, size):
        self.paths = np.asarray(paths, dtype=str)
        self.labels = np.asarray(labels, dtype="int64")
        self.size = tuple(size)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} files but {len(self.labels)} labels")

    def _take(self, index):
        return Files(self.paths[index], self.labels[index], self.size)

    def dataset(self, order=None):
        import tensorflow as tf  # noqa: PLC0415

        size = self.size
        if order is None:
            return tf.data.Dataset.from_tensor_slices((self.paths, self.labels)).map(
                lambda path, y: (read_image(path, size), y), num_parallel_calls=tf.data.AUTOTUNE)
        paths, labels = tf.constant(self.paths), tf.constant(self.labels)
        return tf.data.Dataset.from_tensor_slices(order).map(
            lambda i: (read_image(paths[i], size), labels[i]), num_parallel_calls=tf.data.AUTOTUNE)

    def array(self):
        images = [image.numpy() for image, _ in self.dataset()]
        return np.stack(images).astype("float64") if images else np.zeros((0,) + self.size + (3,))


def read_image(path, size):
    """What Keras' image_dataset_from_directory does to a file: decode as RGB, resize."""
    import tensorflow as tf  # noqa: PLC0415

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, size)
    image.set_shape(tuple(size) + (3,))
    return image


@dataclasses.dataclass(frozen=True)
class Data:
    """Training, validation and test parts, and what the model needs to know of them."""

    name: str
    train: Part
    val: Part
    test: Part
    classes: int
    image_shape: tuple
    class_names: tuple = ()

    def sizes(self):
        """Images in the training, validation and test parts."""
        return len(self.train), len(self.val), len(self.test)


def limit(data, n):
    """``data`` with the first ``n`` training images only (the split already shuffled them).

    >>> data = limit(Data("x", Arrays(np.zeros((9, 2, 2, 1)), range(9)),
    ...                   Arrays(np.zeros((1, 2, 2, 1)), [0]), Arrays(np.zeros((1, 2, 2, 1)), [0]),
    ...                   9, (2, 2, 1)), 4)
    >>> data.sizes()
    (4, 1, 1)
    """
    return data if n is None else dataclasses.replace(data, train=data.train[:n])


def split(n, fractions, seed=SPLIT_SEED):
    """Indices of a fixed-seed shuffle cut into len(fractions) + 1 parts (the rest first).

    >>> [len(part) for part in split(10, (0.1, 0.2))]
    [7, 1, 2]
    """
    order = np.random.default_rng(seed).permutation(n)
    sizes = [int(round(n * f)) for f in fractions]
    cuts = np.cumsum([n - sum(sizes)] + sizes)[:-1]
    return np.split(order, cuts)


# -- the data sets --------------------------------------------------------------------------

def load_data(spec, image_size):
    """The data set ``spec`` of ``--dataset``: ``digits``, ``cifar10:PATH`` or ``folder:PATH``.

    >>> load_data("digits", None).sizes()
    (1258, 180, 359)
    """
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


def load_digits():
    """scikit-learn's 1,797 8x8 digits (values 0-16), 4x nearest upsampling to 32x32x1."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits  # noqa: PLC0415
    except ImportError:
        raise TrainingError("digits needs scikit-learn: pip install \"kresnet[train]\"") from None

    data = sklearn_digits()
    x = np.repeat(np.repeat(data.images.astype("float32"), 4, 1), 4, 2)[..., None]
    images = Arrays(x, data.target)
    train, val, test = split(len(x), (VALIDATION_FRACTION, TEST_FRACTION))
    return Data("digits", images[train], images[val], images[test], 10, (32, 32, 1))


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
    return Arrays(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)


def _cifar_members(path):
    """``{member: (bytes, name for messages)}`` of a CIFAR-10 archive or folder."""
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
        return members
    try:
        with tarfile.open(where) as archive:
            names = {m.name.lstrip("./"): m for m in archive.getmembers() if m.isfile()}
            for member in CIFAR_MEMBERS:
                entry = names.get(f"{CIFAR_FOLDER}/{member}")
                if entry is None:
                    raise TrainingError(
                        f"cifar10: archive {path!r} has no {CIFAR_FOLDER}/{member} (the "
                        f"python version holds {CIFAR_FOLDER}/ with {', '.join(CIFAR_MEMBERS)})")
                members[member] = (archive.extractfile(entry).read(),
                                   f"{path}:{CIFAR_FOLDER}/{member}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise TrainingError(f"cifar10: {path!r} is not a readable tar archive: "
                            f"{error}") from None
    return members


def load_cifar10(path):
    """The CIFAR-10 python version: ``cifar-10-python.tar.gz`` or its extracted folder."""
    parts = [_cifar_batch(raw, repr(name)) for raw, name in _cifar_members(path).values()]
    images = Arrays(np.concatenate([p.images for p in parts[:5]]),
                    np.concatenate([p.labels for p in parts[:5]]))
    train, val = split(len(images), (VALIDATION_FRACTION,))
    return Data("cifar10", images[train], images[val], parts[5], 10, (32, 32, 3))


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
    import tensorflow as tf  # noqa: PLC0415

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
    import keras  # noqa: PLC0415

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
    n_val = max(1, int(round(len(rest) * VALIDATION_FRACTION / held_out)))
    return Data(f"folder:{path}", files_of(train.file_paths), rest[:n_val], rest[n_val:],
                len(found), tuple(image_size) + (3,), tuple(found))

"""tf.data streams of ``kresnet train``: epochs in a seeded order, augmentation, moments.

An epoch's order and augmentation depend on the seed and the epoch number only, so a
resumed run sees the batches that an uninterrupted one would have seen.

This module imports TensorFlow when it is imported; :mod:`kresnet.training.run` imports it
only when training runs.
"""

import numpy as np
import tensorflow as tf


def channel_moments(train, samples=10000):
    """Per-channel mean and variance of the first ``samples`` training images.

    >>> from kresnet.training.data import Arrays
    >>> mean, variance = channel_moments(Arrays(np.arange(8.0).reshape(2, 2, 2, 1), [0, 1]))
    >>> mean.tolist(), variance.tolist()
    ([3.5], [5.25])
    """
    x = train[:samples].array()
    axes = tuple(range(x.ndim - 1))
    return x.mean(axis=axes), np.maximum(x.var(axis=axes), 1e-6)


def augmentation(kind, image_shape):
    """A per-image function of (image, seed) for tf.data; ``None`` for no augmentation.

    ``crop`` pads by 1/8 of each side and crops back at random; ``crop-flip`` also mirrors.
    """
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
    """Batches of epochs ``first_epoch`` .. ``epochs - 1`` of the part ``train``, and the
    steps of one epoch (incomplete batches are dropped)."""
    n = len(train)

    def epoch(e):
        key = tf.stack([tf.constant(seed, tf.int64), e])
        order = tf.cast(tf.argsort(tf.random.stateless_uniform([n], seed=key)), tf.int64)
        ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices(order),
                                  train.dataset(order)))
        if augment is not None:  # seeded by the epoch and the image, not by the position
            ds = ds.map(lambda i, xy: (i, (augment(xy[0], tf.stack([e, i])), xy[1])),
                        num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(lambda i, xy: xy).batch(batch, drop_remainder=True)

    stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch)
    return _sharded(stream).prefetch(tf.data.AUTOTUNE), n // batch


def eval_stream(part, batch):
    """Batches of a validation or test part, in its order."""
    return _sharded(part.dataset().batch(batch)).prefetch(tf.data.AUTOTUNE)


def _sharded(dataset):
    # Several workers each take every n-th batch element (the data is in memory on each).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)

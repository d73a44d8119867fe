"""``kresnet train``: train a kresnet ResNet on real data (needs ``pip install "kresnet[train]"``).

The one place in kresnet that uses TensorFlow directly (``tf.data``, ``tf.distribute``); the
models themselves use ``keras.layers`` and ``keras.ops`` only. Modules, by concern:

- :mod:`~kresnet.training.settings`: the argument parser, the frozen :class:`Settings` of a
  run and :class:`TrainingError` (bad input: one line, exit status 2);
- :mod:`~kresnet.training.data`: digits, ``cifar10:PATH``, ``folder:PATH``; splits and
  ``--limit``; the parts :class:`~kresnet.training.data.Arrays` and
  :class:`~kresnet.training.data.Files` behind one interface;
- :mod:`~kresnet.training.pipeline`: tf.data streams, augmentation, normalisation moments;
- :mod:`~kresnet.training.strategy`: tf.distribute strategies, the multi-worker work-around;
- :mod:`~kresnet.training.model`: the ResNet behind its Normalization layer, the optimizer;
- :mod:`~kresnet.training.callbacks`: checkpoints and history, moving-statistics sync,
  resumable counters;
- :mod:`~kresnet.training.curves`: history.csv and curves.png (matplotlib);
- :mod:`~kresnet.training.startup`: TensorFlow started on Keras' TensorFlow back end without
  its start-up lines;
- :mod:`~kresnet.training.run`: the run folder, ``--resume`` checks, the steps of
  :func:`train` and :func:`main`.

``import kresnet.training`` does not import TensorFlow (nor Keras nor matplotlib):
``settings``, ``data``, ``curves``, ``startup`` and ``run`` import them inside functions;
``pipeline``, ``strategy``, ``model`` and ``callbacks`` import them at the top and are
imported only once training runs.

>>> from kresnet import training
>>> training.parser().parse_args(["--epochs", "2"]).epochs
2
"""

from kresnet.training.run import main, train
from kresnet.training.settings import Settings, TrainingError, parser

__all__ = ["Settings", "TrainingError", "main", "parser", "train"]

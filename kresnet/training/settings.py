"""The options of ``kresnet train``: the argument parser and the frozen :class:`Settings`.

Nothing here imports TensorFlow or Keras, so ``kresnet train --help`` and the checks of
bad arguments answer at once.
"""

import argparse
import ast
import dataclasses
import json
import sys

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1, "rmsprop": 1e-3}
SCHEDULES = ("plateau", "cosine", "constant")
AUGMENTS = ("auto", "none", "crop", "crop-flip")
STRATEGIES = ("auto", "one", "mirrored", "multiworker")
#: A run's checkpoint folder and the pointer to its last complete checkpoint.
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
#: What a resumed run must repeat: the model, data, optimizer and schedule of the first call.
#: (--epochs may grow; --strategy, --cpu-replicas, --verbose and --out are free.)
RESUME_FIXED = ("model", "config", "width", "dataset", "image_size", "limit", "batch_size",
                "optimizer", "lr", "momentum", "weight_decay", "schedule", "patience", "augment",
                "mixed_precision", "seed")
DESCRIPTION = "Train a kresnet ResNet on real data, with checkpoints that survive and " \
    "tf.distribute."
EXAMPLES = """examples:
  %(prog)s --model resnet18 --config stem=cifar --width 32     # digits, 10 epochs
  %(prog)s --dataset cifar10:cifar-10-python.tar.gz --augment crop-flip ...
  %(prog)s --dataset folder:photos --image-size 128 --model resnet50
  %(prog)s --out runs/a --resume                               # continue a killed run

See docs/training.md in kresnet's source for the data sets, outputs and strategies."""


class TrainingError(Exception):
    """Bad input to ``kresnet train``: printed as one line, exit status 2."""


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


def parser(prog="kresnet train"):
    """The argument parser of ``kresnet train`` (and ``scripts/train.py``).

    >>> parser().parse_args(["--config", "stem=cifar", "--width", "32"]).config
    [('stem', 'cifar')]
    """
    p = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=_Formatter)
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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help, and the examples kept as written."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of one run, derived from parsed arguments and checked; never changed.

    ``config`` holds ``--config``'s pairs, plus ``weight_decay`` when ``--weight-decay``
    is the paper's L2 (every optimizer but adamw); ``augment`` is never ``auto``.

    >>> s = Settings.from_args(parser().parse_args(["--weight-decay", "1e-4"]))
    >>> s.config, s.augment, s.learning_rate
    ((('weight_decay', 0.0001),), 'crop', 0.001)
    """

    model: str = "resnet18"
    config: tuple = ()
    width: object = None
    dataset: str = "digits"
    image_size: object = None
    limit: object = None
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    lr: object = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    patience: int = 0
    augment: str = "crop"
    mixed_precision: bool = False
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    strategy: str = "auto"
    cpu_replicas: int = 1
    verbose: object = None

    def __post_init__(self):
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("augment", AUGMENTS[1:]), ("strategy", STRATEGIES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Settings.{name} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "cpu_replicas"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Settings.{name} must be an int; got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"Settings.{name} must be positive; got {value}")
        if not isinstance(self.config, tuple):
            raise TypeError(f"Settings.config must be a tuple of (key, value) pairs; got "
                            f"{type(self.config).__name__}")

    @classmethod
    def from_args(cls, args):
        """Check ``args`` (an ``argparse.Namespace`` of :func:`parser`) and derive settings.

        Raises :class:`TrainingError` for values the parser cannot judge alone.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if not hasattr(args, name)]
        if missing:
            raise TypeError(f"Settings.from_args takes the parsed arguments of parser(); "
                            f"{type(args).__name__} has no {', '.join(missing)}")
        values = {name: getattr(args, name) for name in names}
        if values["patience"] < 0:
            raise TrainingError(f"--patience must be 0 or more; got {values['patience']}")
        if values["weight_decay"] < 0:
            raise TrainingError(f"--weight-decay must be 0 or more; got {values['weight_decay']}")
        if not 0 <= values["momentum"] < 1:
            raise TrainingError(f"--momentum must be in [0, 1); got {values['momentum']}")
        config = tuple(tuple(item) for item in values["config"])
        if values["weight_decay"] and values["optimizer"] != "adamw":
            if "weight_decay" in dict(config):
                raise TrainingError("give --weight-decay or --config weight_decay=, not both")
            config += (("weight_decay", values["weight_decay"]),)
        values["config"] = config
        if values["augment"] == "auto":
            values["augment"] = "crop" if values["dataset"] == "digits" else "crop-flip"
        if values["image_size"] is not None:
            values["image_size"] = tuple(values["image_size"])
        return cls(**values)

    @property
    def options(self):
        """``config`` as a dict: the keyword options given to the model builder."""
        return dict(self.config)

    @property
    def learning_rate(self):
        """``--lr``, or the optimizer's default rate."""
        return self.lr or DEFAULT_LR[self.optimizer]

    def fixed(self):
        """The settings a resumed run must repeat, as JSON stores them, and ``epochs``."""
        fixed = {key: getattr(self, key) for key in RESUME_FIXED + ("epochs",)}
        return json.loads(json.dumps(fixed))

    def as_dict(self):
        """Every setting, for metrics.json."""
        return dataclasses.asdict(self)

    def progress(self):
        """Keras' ``verbose``: as given, else 1 on a terminal and 2 otherwise."""
        if self.verbose is not None:
            return self.verbose
        return 1 if sys.stdout.isatty() else 2

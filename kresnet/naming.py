"""Every layer name kresnet gives, in one place.

The scheme is the one of the original Caffe ResNets (KaimingHe/deep-residual-networks):
the stem is ``conv1``/``bn_conv1``/``pool1``, block ``b`` of stage ``s`` is ``res{s}{b}``,
its residual convolutions are ``res{s}{b}_branch2a``, ``_branch2b``, ``_branch2c`` with
batch norms ``bn{s}{b}_branch2a`` ..., and its projection shortcut is ``res{s}{b}_branch1``
with ``bn{s}{b}_branch1``. Names Caffe has no layer for (explicit padding, ReLUs, the
classifier head) extend the same pattern with a suffix. ``prefix`` is prepended to every
name so that two networks can live in one graph.
"""

import string
from dataclasses import dataclass

LETTERS = string.ascii_lowercase

#: The input layer of every model.
INPUT = "input"
#: Pooling layers of headless models (``pooling="avg"``/``"max"``) and of every head.
AVG_POOL = "avg_pool"
MAX_POOL = "max_pool"


def block_label(index, n_blocks, numbered=None):
    """Return the Caffe label of block ``index`` (0-based) in a stage of ``n_blocks`` blocks.

    Letters ``a, b, c, ...`` by default; ``a, b1, b2, ...`` when ``numbered`` (the original
    ResNet-101/152 stages 3 and 4). ``numbered=None`` numbers only stages of more than 26
    blocks, where letters run out.

    >>> [block_label(i, 3) for i in range(3)]
    ['a', 'b', 'c']
    >>> [block_label(i, 23, numbered=True) for i in (0, 1, 22)]
    ['a', 'b1', 'b22']
    """
    if numbered is None:
        numbered = n_blocks > len(LETTERS)
    if numbered:
        return "a" if index == 0 else f"b{index}"
    return LETTERS[index]


def stage_labels(n_blocks, numbered=None):
    """Return the labels of every block of a stage.

    >>> stage_labels(4, numbered=True)
    ['a', 'b1', 'b2', 'b3']
    """
    return [block_label(i, n_blocks, numbered) for i in range(n_blocks)]


@dataclass(frozen=True)
class StemNames:
    """Names of the stem's layers.

    The classic and CIFAR stems have one conv, ``conv1``; the deep stem (ResNet-C) has three,
    ``conv1a``, ``conv1b``, ``conv1c``: pass the letter as ``part``.

    >>> StemNames().conv(), StemNames().bn("b"), StemNames("left_").pool
    ('conv1', 'bn_conv1b', 'left_pool1')
    """

    prefix: str = ""

    def conv(self, part=""):
        return f"{self.prefix}conv1{part}"

    def conv_pad(self, part=""):
        return f"{self.prefix}conv1{part}_pad"

    def bn(self, part=""):
        return f"{self.prefix}bn_conv1{part}"

    def relu(self, part=""):
        return f"{self.prefix}conv1{part}_relu"

    @property
    def pool_pad(self):
        return f"{self.prefix}pool1_pad"

    @property
    def pool(self):
        return f"{self.prefix}pool1"

    @property
    def post_bn(self):
        """Pre-activation nets end their last stage with one BN and ReLU."""
        return f"{self.prefix}bn_post"

    @property
    def post_relu(self):
        return f"{self.prefix}post_relu"

    def all(self):
        names = [self.pool_pad, self.pool, self.post_bn, self.post_relu]
        for part in ("", "a", "b", "c"):
            names += [self.conv_pad(part), self.conv(part), self.bn(part), self.relu(part)]
        return names


@dataclass(frozen=True)
class BlockNames:
    """Names of the layers of residual block ``res{stage}{block}``.

    Branch ``"1"`` is the shortcut, ``"2a"``, ``"2b"``, ``"2c"`` the residual convolutions.

    >>> n = BlockNames(2, "a")
    >>> n.conv("2a"), n.bn("2a"), n.relu("2a")
    ('res2a_branch2a', 'bn2a_branch2a', 'res2a_branch2a_relu')
    >>> n.conv("1"), n.bn("1"), n.sum, n.out
    ('res2a_branch1', 'bn2a_branch1', 'res2a', 'res2a_relu')
    """

    stage: object
    block: str
    prefix: str = ""

    BRANCHES = ("1", "2a", "2b", "2c")

    @property
    def base(self):
        return f"{self.stage}{self.block}"

    def conv(self, branch):
        return f"{self.prefix}res{self.base}_branch{branch}"

    def bn(self, branch):
        return f"{self.prefix}bn{self.base}_branch{branch}"

    def relu(self, branch):
        return f"{self.prefix}res{self.base}_branch{branch}_relu"

    def pad(self, branch):
        # Only convolutions that stride with a kernel wider than 1 get explicit padding.
        return f"{self.prefix}res{self.base}_branch{branch}_pad"

    def shortcut(self, role):
        """Parameter-free shortcut layers: ``pool`` (subsampling or ResNet-D's average
        pooling), and for option A's zero channels ``permute``, ``zeros``, ``unpermute``."""
        return f"{self.prefix}res{self.base}_branch1_{role}"

    @property
    def preact_bn(self):
        """Pre-activation blocks (ResNet v2) start with BN and ReLU on their input."""
        return f"{self.prefix}bn{self.base}_preact"

    @property
    def preact_relu(self):
        return f"{self.prefix}res{self.base}_preact_relu"

    def se(self, role):
        """Squeeze-and-excitation: ``pool``, ``squeeze``, ``excite``, ``scale``."""
        return f"{self.prefix}res{self.base}_se_{role}"

    @property
    def sum(self):
        return f"{self.prefix}res{self.base}"

    @property
    def out(self):
        return f"{self.prefix}res{self.base}_relu"

    def all(self):
        """Every name the block may use, for collision checks before it is built."""
        names = [self.sum, self.out, self.preact_bn, self.preact_relu]
        names += [self.shortcut(r) for r in ("pool", "permute", "zeros", "unpermute")]
        names += [self.se(r) for r in ("pool", "squeeze", "excite", "scale")]
        for branch in self.BRANCHES:
            names += [self.conv(branch), self.bn(branch), self.relu(branch), self.pad(branch)]
        return names


@dataclass(frozen=True)
class HeadNames:
    """Names of the classifier heads.

    ``"tutorial"``: ``avg_pool``, ``dropout_fc_01``, ``fc_01``, ``dropout_fc_final``,
    ``fc_final``: each dropout is named after the Dense layer it feeds.
    ``"fc"``: ``avg_pool``, ``fc{classes}`` (``fc1000`` as in Caffe for 1000 classes).

    >>> HeadNames().fc(1000), HeadNames("x_").final
    ('fc1000', 'x_fc_final')
    """

    prefix: str = ""

    @property
    def avg_pool(self):
        return f"{self.prefix}{AVG_POOL}"

    @property
    def max_pool(self):
        return f"{self.prefix}{MAX_POOL}"

    @property
    def hidden(self):
        return f"{self.prefix}fc_01"

    @property
    def final(self):
        return f"{self.prefix}fc_final"

    @property
    def dropout_hidden(self):
        return f"{self.prefix}dropout_fc_01"

    @property
    def dropout_final(self):
        return f"{self.prefix}dropout_fc_final"

    def fc(self, classes):
        return f"{self.prefix}fc{classes}"

    def all(self, classes):
        return [self.avg_pool, self.max_pool, self.dropout_hidden, self.hidden,
                self.dropout_final, self.final, self.fc(classes)]


def input_name(prefix=""):
    """Name of the model's input layer.

    >>> input_name("left_")
    'left_input'
    """
    return f"{prefix}{INPUT}"


def prefix_of(stem_conv_name):
    """The ``name_prefix`` of a model whose first conv is ``stem_conv_name`` (``conv1`` or
    the deep stem's ``conv1a``, prefixed), or None for a name of no kresnet stem.

    >>> prefix_of("left_conv1"), prefix_of("conv1a"), prefix_of("conv2d")
    ('left_', '', None)
    """
    for stem in (StemNames().conv(), StemNames().conv("a")):
        if stem_conv_name.endswith(stem):
            return stem_conv_name[: -len(stem)]
    return None


def model_name(depth, prefix=""):
    """Default model name: ``resnet50``, or ``left_resnet50`` with a prefix.

    >>> model_name(50)
    'resnet50'
    """
    return f"{prefix}resnet{depth}"


def keras_applications_names(labels, prefix=""):
    """Map kresnet layer names to keras.applications' (``ResNet50``, ``ResNet50V2``, ...).

    ``labels``: the block labels of each stage, from stage 2 on. keras.applications numbers
    blocks from 1 (``conv4_block23``) where Caffe labels them (``res4b22``). The map covers
    both v1 and v2 layers (it names ``bn2a_preact`` and ``bn_post`` too) and the 1000-class
    head; callers map a head of another width themselves.

    >>> names = keras_applications_names([["a", "b", "c"]])
    >>> names["res2a_branch2a"], names["bn2c_branch1"], names["fc1000"]
    ('conv2_block1_1_conv', 'conv2_block3_0_bn', 'predictions')
    """
    stem = StemNames(prefix)
    mapping = {stem.conv(): "conv1_conv", stem.bn(): "conv1_bn", stem.post_bn: "post_bn",
               HeadNames(prefix).fc(1000): "predictions"}
    for stage, stage_block_labels in enumerate(labels, start=2):
        for index, label in enumerate(stage_block_labels, start=1):
            ours, theirs = BlockNames(stage, label, prefix), f"conv{stage}_block{index}"
            mapping[ours.preact_bn] = f"{theirs}_preact_bn"
            for branch, number in zip(BlockNames.BRANCHES, "0123"):
                mapping[ours.conv(branch)] = f"{theirs}_{number}_conv"
                mapping[ours.bn(branch)] = f"{theirs}_{number}_bn"
    return mapping

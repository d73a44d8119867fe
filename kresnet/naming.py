"""Every layer name kresnet gives, in one place.

The scheme is the one of the original Caffe ResNets (KaimingHe/deep-residual-networks):
the stem is ``conv1``/``bn_conv1``/``pool1``, block ``b`` of stage ``s`` is ``res{s}{b}``,
its residual convolutions are ``res{s}{b}_branch2a``, ``_branch2b``, ``_branch2c`` with
batch norms ``bn{s}{b}_branch2a`` ..., and its projection shortcut is ``res{s}{b}_branch1``
with ``bn{s}{b}_branch1``. Names Caffe has no layer for (explicit padding, ReLUs, the
classifier head) extend the same pattern with a suffix. ``prefix`` is prepended to every
name so that two networks can live in one graph.

This module also reads names back: :func:`parse` tells the part, stage, block, branch and
role of any name it gives, and :func:`prefixes` finds the ResNets in a list of layer names.
No other module holds a name pattern.
"""

import re
import string
from dataclasses import dataclass
from typing import Iterable, List, Optional

LETTERS = string.ascii_lowercase

#: The input layer of every model.
INPUT = "input"
#: Pooling layers of headless models (``pooling="avg"``/``"max"``) and of every head;
#: ``avgmax`` averages the two, ``catavgmax`` concatenates them.
AVG_POOL = "avg_pool"
MAX_POOL = "max_pool"
AVGMAX_POOL = "avgmax_pool"
CATAVGMAX_POOL = "catavgmax_pool"
#: The layers of a binomial blur (anti_alias="blur"), after the name of what it
#: anti-aliases: per axis a 2-pool (``pair``), a pad-excluding 2-pool (``mean``), the first
#: row or column (``edge``) and their join, then the subsampling (``stride``).
BLUR_ROLES = ("rows_pair", "rows_mean", "rows_edge", "rows", "cols_pair", "cols_mean",
              "cols_edge", "cols", "stride")
#: Efficient channel attention's layers: pool, reshape, conv (1-D, sigmoid), expand, scale.
ECA_ROLES = ("pool", "reshape", "conv", "expand", "scale")


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


def _prefixed(name):
    """A property giving ``name`` with the object's ``prefix`` in front."""
    return property(lambda self: f"{self.prefix}{name}", doc=f"``{name}`` with the prefix.")


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

    pool_pad = _prefixed("pool1_pad")
    #: The stem's downsampling: a max pool, the 2x2 average pool of anti_alias="avg", or
    #: the 3x3 conv of stem_pool="conv" (with ``pool_bn`` and ``pool_relu``).
    pool = _prefixed("pool1")
    pool_stride = _prefixed("pool1_stride")
    pool_bn = _prefixed("bn_pool1")
    pool_relu = _prefixed("pool1_relu")
    #: The blur after the stem's stride-1 pooling (anti_alias="blur"), see :func:`blur`.
    pool_aa = _prefixed("pool1_aa")
    #: Pre-activation nets end their last stage with one BN and ReLU.
    post_bn = _prefixed("bn_post")
    post_relu = _prefixed("post_relu")

    def all(self):
        names = [self.pool_pad, self.pool, self.pool_stride, self.pool_bn, self.pool_relu,
                 self.post_bn, self.post_relu, *blur(self.pool_aa).values()]
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

    def eca(self, role):
        """Efficient channel attention: one of :data:`ECA_ROLES`."""
        return f"{self.prefix}res{self.base}_eca_{role}"

    def aa(self, branch):
        """The anti-aliasing after the strided conv of ``branch`` (``res3a_branch2b_aa``):
        the average pool itself, or the name the blur's layers extend (:func:`blur`)."""
        return f"{self.prefix}res{self.base}_branch{branch}_aa"

    @property
    def drop_path(self):
        """Stochastic depth: a per-sample Dropout on the residual branch."""
        return f"{self.prefix}res{self.base}_drop_path"

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
        names += [self.eca(r) for r in ECA_ROLES] + [self.drop_path]
        for branch in self.BRANCHES:
            names += [self.conv(branch), self.bn(branch), self.relu(branch), self.pad(branch)]
            if branch != "1":  # the shortcut is never anti-aliased
                names += [self.aa(branch), *blur(self.aa(branch)).values()]
        return names


def blur(base):
    """Role -> name of each layer of a blur (:data:`BLUR_ROLES`) after ``base``.

    >>> blur("res3a_branch2b_aa")["rows_mean"], blur("pool1_aa")["stride"]
    ('res3a_branch2b_aa_rows_mean', 'pool1_aa_stride')
    """
    return {role: f"{base}_{role}" for role in BLUR_ROLES}


#: The layers of the heads by role, without prefix; each dropout is named after the Dense
#: layer it feeds.
HEAD_ROLES = {"avg_pool": AVG_POOL, "max_pool": MAX_POOL, "avgmax_pool": AVGMAX_POOL,
              "catavgmax_pool": CATAVGMAX_POOL, "hidden": "fc_01",
              "final": "fc_final", "dropout_hidden": "dropout_fc_01",
              "dropout_final": "dropout_fc_final"}


@dataclass(frozen=True)
class HeadNames:
    """Names of the classifier heads.

    ``"tutorial"``: ``avg_pool``, ``dropout_fc_01``, ``fc_01``, ``dropout_fc_final``,
    ``fc_final``. ``"fc"``: ``avg_pool``, ``fc{classes}`` (``fc1000`` as in Caffe for 1000
    classes).

    >>> HeadNames().fc(1000), HeadNames("x_").final, HeadNames().dropout_hidden
    ('fc1000', 'x_fc_final', 'dropout_fc_01')
    """

    prefix: str = ""

    avg_pool = _prefixed(HEAD_ROLES["avg_pool"])
    max_pool = _prefixed(HEAD_ROLES["max_pool"])
    avgmax_pool = _prefixed(HEAD_ROLES["avgmax_pool"])
    catavgmax_pool = _prefixed(HEAD_ROLES["catavgmax_pool"])
    hidden = _prefixed(HEAD_ROLES["hidden"])
    final = _prefixed(HEAD_ROLES["final"])
    dropout_hidden = _prefixed(HEAD_ROLES["dropout_hidden"])
    dropout_final = _prefixed(HEAD_ROLES["dropout_final"])

    def fc(self, classes):
        return f"{self.prefix}fc{classes}"

    def all(self, classes):
        return [getattr(self, role) for role in HEAD_ROLES] + [self.fc(classes)]


def stage_name(stage, prefix=""):
    """The name of a stage as a whole, as in the Caffe tables: ``res2`` ... ``res5``.

    >>> stage_name(4), stage_name(2, "x_")
    ('res4', 'x_res2')
    """
    return f"{prefix}res{stage}"


def pooling_of(names, prefix=""):
    """``"avg"``, ``"max"`` or None: the global pooling that the names of a headless model
    hold (kresnet's and keras.applications' pooling layers have the same names).

    >>> pooling_of(["res5c_relu", "max_pool"]), pooling_of(["x_avg_pool"], "x_")
    ('max', 'avg')
    """
    names = set(names)
    head = HeadNames(prefix)
    for pooling in ("catavgmax", "avgmax", "avg", "max"):
        if getattr(head, f"{pooling}_pool") in names:
            return pooling
    return None


def input_name(prefix=""):
    """Name of the model's input layer.

    >>> input_name("left_")
    'left_input'
    """
    return f"{prefix}{INPUT}"


@dataclass(frozen=True)
class PreprocessNames:
    """Names of the layers that ``include_preprocessing=True`` puts in front of the stem:
    ``preprocess_bgr`` (a fixed 1x1 conv: RGB to BGR minus the Caffe mean pixel),
    ``preprocess_rescale`` (0-255 to 0-1) and ``preprocess_normalize`` (mean and std).

    >>> PreprocessNames("left_").normalize
    'left_preprocess_normalize'
    """

    prefix: str = ""
    bgr = _prefixed("preprocess_bgr")
    rescale = _prefixed("preprocess_rescale")
    normalize = _prefixed("preprocess_normalize")


def is_preprocessing(name: str) -> bool:
    """True for a layer of ``include_preprocessing``, whatever its prefix.

    >>> is_preprocessing("left_preprocess_bgr"), is_preprocessing("conv1")
    (True, False)
    """
    bare = PreprocessNames()
    return isinstance(name, str) and name.endswith((bare.bgr, bare.rescale, bare.normalize))


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


#: keras.applications' names of its classifier and of the last BN of its V2 nets.
KERAS_PREDICTIONS = "predictions"
KERAS_POST_BN = "post_bn"
_KERAS_BLOCK = re.compile(r"^conv(\d+)_block(\d+)_1_conv$")


def keras_applications_blocks(names: Iterable[str]) -> tuple:
    """Blocks per stage of a keras.applications ResNet, read off its layer names
    (``conv4_block23_1_conv``: stage 4 has at least 23 blocks).

    >>> keras_applications_blocks(["conv2_block1_1_conv", "conv2_block2_1_conv", "conv3_block1_1_conv"])
    (2, 1)
    """
    counts = {}
    for name in names:
        match = _KERAS_BLOCK.match(name)
        if match:
            stage = int(match.group(1))
            counts[stage] = max(counts.get(stage, 0), int(match.group(2)))
    return tuple(counts[s] for s in sorted(counts))


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
    mapping = {stem.conv(): "conv1_conv", stem.bn(): "conv1_bn", stem.post_bn: KERAS_POST_BN,
               HeadNames(prefix).fc(1000): KERAS_PREDICTIONS}
    for stage, stage_block_labels in enumerate(labels, start=2):
        for index, label in enumerate(stage_block_labels, start=1):
            ours, theirs = BlockNames(stage, label, prefix), f"conv{stage}_block{index}"
            mapping[ours.preact_bn] = f"{theirs}_preact_bn"
            for branch, number in zip(BlockNames.BRANCHES, "0123"):
                mapping[ours.conv(branch)] = f"{theirs}_{number}_conv"
                mapping[ours.bn(branch)] = f"{theirs}_{number}_bn"
    return mapping


#: torchvision's and timm's module of each stem layer: the classic stem's one conv, and the
#: deep stem's nn.Sequential (conv, bn, relu, conv, bn, relu, conv) whose BN after the last
#: conv is the model's ``bn1``.
_TORCH_STEM = {"": ("conv1", "bn1"), "a": ("conv1.0", "conv1.1"), "b": ("conv1.3", "conv1.4"),
               "c": ("conv1.6", "bn1")}
_TORCH_BRANCH = {"2a": "1", "2b": "2", "2c": "3"}


def torch_names(labels, deep_stem=False, avg_shortcut=False, classes=None, prefix="",
                anti_alias=False):
    """Map kresnet layer names to the module names of torchvision's and timm's ResNets
    (``layer3.5.conv2``), whose state_dict keys add ``.weight``, ``.bias``,
    ``.running_mean`` and ``.running_var``.

    ``labels``: the block labels of each stage, from stage 2 on (torch's ``layer1``); blocks
    count from 0 there. The shortcut's conv and BN are ``downsample.0`` and ``.1``, or
    ``.1`` and ``.2`` behind timm's average pooling (``avg_shortcut``); squeeze-and-excitation
    is timm's ``se.fc1`` and ``se.fc2``, efficient channel attention ``se.conv``; ResNet-RS's
    stem conv and BN are ``maxpool.0`` and ``.1`` (``.2`` behind ``anti_alias``); the
    ``classes``-way classifier is ``fc``.

    >>> names = torch_names([["a", "b"]], deep_stem=True, classes=1000)
    >>> names["bn_conv1c"], names["res2b_branch2c"], names["bn2a_branch1"], names["fc1000"]
    ('bn1', 'layer1.1.conv3', 'layer1.0.downsample.1', 'fc')
    """
    stem = StemNames(prefix)
    mapping = {}
    for part in ("a", "b", "c") if deep_stem else ("",):
        conv, bn = _TORCH_STEM[part]
        mapping[stem.conv(part)], mapping[stem.bn(part)] = conv, bn
    mapping[stem.pool], mapping[stem.pool_bn] = "maxpool.0", f"maxpool.{2 if anti_alias else 1}"
    shortcut = ("downsample.1", "downsample.2") if avg_shortcut else ("downsample.0",
                                                                        "downsample.1")
    for stage, stage_block_labels in enumerate(labels, start=2):
        for index, label in enumerate(stage_block_labels):
            ours, theirs = BlockNames(stage, label, prefix), f"layer{stage - 1}.{index}"
            for branch, number in _TORCH_BRANCH.items():
                mapping[ours.conv(branch)] = f"{theirs}.conv{number}"
                mapping[ours.bn(branch)] = f"{theirs}.bn{number}"
            mapping[ours.conv("1")] = f"{theirs}.{shortcut[0]}"
            mapping[ours.bn("1")] = f"{theirs}.{shortcut[1]}"
            mapping[ours.se("squeeze")] = f"{theirs}.se.fc1"
            mapping[ours.se("excite")] = f"{theirs}.se.fc2"
            mapping[ours.eca("conv")] = f"{theirs}.se.conv"
    if classes is not None:
        mapping[HeadNames(prefix).fc(classes)] = "fc"
    return mapping


def timm_resnetv2_names(labels, classes=None, prefix=""):
    """Map kresnet layer names to the module names of timm's pre-activation ResNets
    (``resnetv2_50``): ``stem.conv``; block ``B`` of stage ``S`` is ``stages.{S-2}.blocks.{B}``,
    whose pre-activation BN is ``norm1``, its convs ``conv1`` ... ``conv3`` with the BNs
    ``norm2`` and ``norm3`` between them, the projection ``downsample.conv``; the last BN
    is ``norm`` and the classifier ``head.fc`` (a 1x1 conv in timm).

    >>> names = timm_resnetv2_names([["a", "b"]], classes=1000)
    >>> names["bn2a_preact"], names["bn2b_branch2b"], names["bn_post"], names["fc1000"]
    ('stages.0.blocks.0.norm1', 'stages.0.blocks.1.norm3', 'norm', 'head.fc')
    """
    stem = StemNames(prefix)
    mapping = {stem.conv(): "stem.conv", stem.post_bn: "norm"}
    for stage, stage_block_labels in enumerate(labels, start=2):
        for index, label in enumerate(stage_block_labels):
            ours, theirs = BlockNames(stage, label, prefix), f"stages.{stage - 2}.blocks.{index}"
            mapping[ours.preact_bn] = f"{theirs}.norm1"
            for branch, number in _TORCH_BRANCH.items():
                mapping[ours.conv(branch)] = f"{theirs}.conv{number}"
                if branch != "2c":  # a pre-activation branch ends in its conv
                    mapping[ours.bn(branch)] = f"{theirs}.norm{int(number) + 1}"
            mapping[ours.conv("1")] = f"{theirs}.downsample.conv"
    if classes is not None:
        mapping[HeadNames(prefix).fc(classes)] = "head.fc"
    return mapping


@dataclass(frozen=True)
class Name:
    """What :func:`parse` reads from a layer name.

    ``part``: ``"input"``, ``"stem"``, ``"block"``, ``"post"`` (the last BN and ReLU of a
    pre-activation net) or ``"head"``. ``stage``: 1 for the stem, 2, 3, ... for blocks.
    ``block``: the block label (``"a"``, ``"b22"``); ``base`` is ``res{stage}{block}``.
    ``branch``: ``"1"`` (shortcut), ``"2a"``, ``"2b"``, ``"2c"``, or the deep stem's conv
    letter. ``role``: ``conv``, ``bn``, ``relu``, ``pad``, ``sum``, ``out``, ``preact_bn``,
    ``preact_relu``, ``se_pool`` / ``se_squeeze`` / ``se_excite`` / ``se_scale``, the
    shortcut's ``pool`` / ``permute`` / ``zeros`` / ``unpermute``, the stem's ``pool`` and
    ``pool_pad``, the head's ``avg_pool``, ``max_pool``, ``hidden``, ``final``,
    ``dropout_hidden``, ``dropout_final`` and ``fc`` (``classes`` set), or ``input``.
    """

    part: str
    role: str
    stage: Optional[int] = None
    block: Optional[str] = None
    branch: Optional[str] = None
    classes: Optional[int] = None
    prefix: str = ""

    @property
    def base(self):
        """``res{stage}{block}`` of a block layer: the name of its sum, without prefix."""
        return None if self.block is None else f"res{self.stage}{self.block}"


_LABEL_TEXT = r"(?P<stage>\d+)(?P<block>[A-Za-z][A-Za-z0-9]*?)"
_BLOCK_PATTERNS = [
    (re.compile(rf"^res{_LABEL_TEXT}_branch(?P<branch>1|2[abc])(?:_(?P<role>relu|pad))?$"),
     "conv"),
    (re.compile(rf"^bn{_LABEL_TEXT}_branch(?P<branch>1|2[abc])$"), "bn"),
    (re.compile(rf"^res{_LABEL_TEXT}_branch(?P<branch>1)_"
                r"(?P<role>pool|permute|zeros|unpermute)$"), None),
    (re.compile(rf"^bn{_LABEL_TEXT}_preact$"), "preact_bn"),
    (re.compile(rf"^res{_LABEL_TEXT}_preact_relu$"), "preact_relu"),
    (re.compile(rf"^res{_LABEL_TEXT}_se_(?P<role>pool|squeeze|excite|scale)$"), "se_"),
    (re.compile(rf"^res{_LABEL_TEXT}_eca_(?P<role>{'|'.join(ECA_ROLES)})$"), "eca_"),
    (re.compile(rf"^res{_LABEL_TEXT}_branch(?P<branch>2[abc])_aa"
                rf"(?:_(?P<role>{'|'.join(BLUR_ROLES)}))?$"), "aa"),
    (re.compile(rf"^res{_LABEL_TEXT}_drop_path$"), "drop_path"),
    (re.compile(rf"^res{_LABEL_TEXT}_relu$"), "out"),
    (re.compile(rf"^res{_LABEL_TEXT}$"), "sum"),
]
_STEM = re.compile(r"^(?P<bn>bn_)?conv1(?P<branch>[abc]?)(?:_(?P<role>pad|relu))?$")
_FC = re.compile(r"^fc(?P<classes>\d+)$")


def _roles():
    """Head, stem-pool and post names (without prefix) -> (part, role)."""
    stem = StemNames()
    roles = {INPUT: ("input", "input"), stem.pool: ("stem", "pool"),
             stem.pool_pad: ("stem", "pool_pad"), stem.pool_stride: ("stem", "pool_stride"),
             stem.pool_bn: ("stem", "pool_bn"), stem.pool_relu: ("stem", "pool_relu"),
             stem.pool_aa: ("stem", "aa"),
             stem.post_bn: ("post", "bn"),
             stem.post_relu: ("post", "relu")}
    roles.update({name: ("stem", f"aa_{role}") for role, name in blur(stem.pool_aa).items()})
    roles.update({name: ("head", role) for role, name in HEAD_ROLES.items()})
    fixed = PreprocessNames()
    roles.update({fixed.bgr: ("preprocess", "bgr"), fixed.rescale: ("preprocess", "rescale"),
                  fixed.normalize: ("preprocess", "normalize")})
    return roles


_FIXED = _roles()


def parse(name: str, prefix: str = "") -> Optional[Name]:
    """Read a layer name that kresnet gives; ``None`` for any other name (or one without
    ``prefix``).

    >>> parse("res4b22_branch2a")
    Name(part='block', role='conv', stage=4, block='b22', branch='2a', classes=None, prefix='')
    >>> parse("x_bn3a_branch1", prefix="x_").role, parse("fc1000").classes
    ('bn', 1000)
    >>> parse("bn_conv1b").branch, parse("dense") is None
    ('b', True)
    >>> parse("preprocess_normalize").part
    'preprocess'
    """
    if not isinstance(name, str) or not name.startswith(prefix):
        return None
    bare = name[len(prefix):]
    if bare in _FIXED:
        part, role = _FIXED[bare]
        return Name(part, role, stage=1 if part == "stem" else None, prefix=prefix)
    match = _FC.match(bare)
    if match:
        return Name("head", "fc", classes=int(match["classes"]), prefix=prefix)
    match = _STEM.match(bare)
    if match:
        role = "bn" if match["bn"] else (match["role"] or "conv")
        if match["bn"] and match["role"]:
            return None
        return Name("stem", role, stage=1, branch=match["branch"] or None, prefix=prefix)
    for pattern, role in _BLOCK_PATTERNS:
        match = pattern.match(bare)
        if match:
            groups = match.groupdict()
            found = groups.get("role")
            if role in ("se_", "eca_"):
                role += found
            elif role == "aa":
                role = f"aa_{found}" if found else "aa"
            else:
                role = found if role is None else (found or role)
            return Name("block", role, stage=int(groups["stage"]), block=groups["block"],
                        branch=groups.get("branch"), prefix=prefix)
    return None


def prefixes(names: Iterable[str]) -> List[str]:
    """The ``name_prefix`` of every ResNet in a list of layer names, in order: those whose
    stem conv (``conv1`` or ``conv1a``) and first block sum (``res2a``) are both present.

    >>> prefixes(["input", "conv1", "res2a"]), prefixes(["a_conv1a", "a_res2a", "b_conv1", "b_res2a"])
    ([''], ['a_', 'b_'])
    """
    names = list(names)
    present = set(names)
    found = []
    first_block = BlockNames(2, "a").sum
    for name in names:
        prefix = prefix_of(name)
        if prefix is not None and prefix + first_block in present and prefix not in found:
            found.append(prefix)
    return found

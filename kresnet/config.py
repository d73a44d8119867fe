"""The one description of a network: :class:`ResNetConfig`, every option declared once.

Each field of :class:`ResNetConfig` is an option, and its declaration (:func:`option`) holds
its name, type, default, allowed values and one doc line. Everything else reads them: the
checks (run when a config is made, before any layer exists), the signatures of
``create_resnet``, ``conv_block``, ``identity_block`` and ``do_first_conv``, the options
table of docs/api.md (``scripts/make_docs.py``) and docs/errors.md (held by a test).

A config is frozen and fully resolved: ``ResNetConfig(depth=101).blocks`` is
``(3, 4, 23, 3)``. Its :attr:`~ResNetConfig.plan` lists the blocks to build. A preset is a
named config; :func:`kresnet.config_of` reads one back from a built model.

>>> config = ResNetConfig(depth=101, stride_on="3x3")
>>> config.blocks, config.widths, [b.label for b in config.plan.stages[1]]
((3, 4, 23, 3), (64, 128, 256, 512), ['a', 'b1', 'b2', 'b3'])
>>> config.replace(depth=50).blocks
(3, 4, 6, 3)
"""

import dataclasses
import inspect
import math
from dataclasses import InitVar, dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Tuple, Union

from kresnet import naming, validation
from kresnet.depths import (BASE_WIDTH, BLOCK_TYPES, DEPTHS, FIRST_STAGE, block_filters,
                            depth_of, stage_widths)

#: BatchNormalization epsilon of keras.applications (1e-5 in torchvision, 1e-3 Keras' default),
#: so that weights moved between kresnet and keras.applications give the same outputs.
BN_EPSILON = 1.001e-5
#: BatchNormalization momentum of PyTorch (written 0.1 there). Keras' default 0.99 lags behind
#: on short runs: moving statistics are not settled after a few hundred steps.
BN_MOMENTUM = 0.9
KERNEL_INITIALIZER = "he_normal"
DEFAULT_SIZE = 224
STEMS = ("classic", "deep", "cifar")
STEM_POOLS = ("zeros", "ignore", "conv")
#: Default widths: one conv for classic and cifar, three for deep.
STEM_WIDTHS = MappingProxyType({"classic": (64,), "deep": (32, 32, 64), "cifar": (16,)})
#: Downsampling of each stem.
STEM_STRIDES = MappingProxyType({"classic": 4, "deep": 4, "cifar": 1})
STRIDE_ON = ("1x1", "3x3")
SHORTCUTS = ("B", "A", "C", "avg")
STRIDE_BLOCKS = ("first", "last")
HEADS = ("tutorial", "fc", None)
POOLINGS = (None, "avg", "max", "avgmax", "catavgmax")
ANTI_ALIAS = (None, "avg", "blur")
NORMS = ("batch", "group")
OUTPUT_STRIDES = (None, 8, 16, 32)
OUTPUTS = ("final", "stages")
#: The tutorial's head: dropout before and after one hidden Dense layer.
TUTORIAL_DROPOUT = 0.5
TUTORIAL_FC_UNITS = 200

Shape = Tuple[Optional[int], Optional[int], int]


def option(default, check, allowed, doc, group):
    """Declare one option: a dataclass field whose metadata carries its check (``check(value,
    name)`` returns the value to keep or raises), what it allows and its doc line."""
    return field(default=default, metadata={"check": check, "allowed": allowed, "doc": doc,
                                            "group": group})


def _optional(check):
    return lambda value, name: None if value is None else check(value, name)


def _choice(allowed):
    return lambda value, name: validation.one_of(name, value, allowed)


def _interval(low, high, low_open=False, high_open=False):
    return lambda value, name: validation.number(name, value, low, high, low_open, high_open)


def _blocks(value, name):
    return validation.blocks(value)


def _widths(value, name):
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"`{name}` must list one positive integer per stage. "
                        f"Received: {name}={value!r}")
    return tuple(validation.positive_int(f"{name}[{i}]", w) for i, w in enumerate(value))


def _stem_width(value, name):
    widths = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return tuple(validation.positive_int(name, w) for w in widths)


def _input_shape(value, name):
    return validation.spatial_shape(name, value, None)  # sizes: once the plan is known


def _positive(value, name):
    return validation.positive_int(name, value)


def _boolean(value, name):
    return validation.boolean(name, value)


NETWORK, BLOCK, HEAD, LAYER, MODEL = "network", "block", "head", "layer", "model"


@dataclass(frozen=True)
class ResNetConfig:
    """A whole network, checked and resolved when it is made (``ValueError`` or
    ``TypeError`` naming the option otherwise).

    ``input_shape`` is always ``(height, width, channels)``, whatever the image data format.

    >>> ResNetConfig(depth=18, classes=3).plan.depth
    18
    >>> ResNetConfig(depth=18, groups=2)
    Traceback (most recent call last):
        ...
    ValueError: `groups`=2 and `width_per_group`=64 apply to bottleneck blocks only; `block_type`='basic' needs groups=1 and width_per_group=64.
    """

    # -- which blocks, how wide ---------------------------------------------------------------
    depth: int = option(50, lambda v, n: validation.depth(v), "18, 34, 50, 101, 152 or 200",
                        "a row of kresnet.DEPTHS: block kind and blocks per stage", NETWORK)
    blocks: Optional[Tuple[int, ...]] = option(
        None, _optional(_blocks), "None or a non-empty tuple/list of 1 to 8 ints >= 1",
        "blocks per stage, overriding the row's", NETWORK)
    block_type: Optional[str] = option(
        None, _optional(_choice(BLOCK_TYPES)), "None, 'basic' or 'bottleneck'",
        "the kind of residual block, overriding the row's", NETWORK)
    widths: Optional[Tuple[int, ...]] = option(
        None, _optional(_widths), "None or one int >= 1 per stage",
        "stage widths (a bottleneck outputs 4 times its width); default 64, 128, 256, ...",
        NETWORK)
    middle_kernel_size: Union[int, Tuple[int, int]] = option(
        3, lambda v, n: validation.kernel_size(v, n), "a positive odd int or a pair of them",
        "kernel of the middle conv of a bottleneck, of both convs of a basic block", NETWORK)
    stem: str = option("classic", _choice(STEMS), "'classic', 'deep' or 'cifar'",
                       "7x7/2 conv + max pool; three 3x3 convs + max pool; one 3x3/1 conv",
                       NETWORK)
    stem_width: Optional[Union[int, Tuple[int, ...]]] = option(
        None, _optional(_stem_width), "None, an int >= 1 (classic, cifar) or 3 of them (deep)",
        "width of the stem's conv(s); default 64, (32, 32, 64) deep, 16 cifar", NETWORK)
    stem_pool: str = option(
        "zeros", _choice(STEM_POOLS), "'zeros', 'ignore' or 'conv'; not with stem='cifar'",
        "the stem's 3x3/2 max pool pads with zeros (Caffe, keras) or with cells that never "
        "win (torch's MaxPool2d(padding=1)); 'conv': a 3x3/2 conv, BN and ReLU instead "
        "(ResNet-RS)", NETWORK)
    stride_block: str = option("first", _choice(STRIDE_BLOCKS), "'first' or 'last'",
                               "which block of a stage halves the size (last: keras' V2)",
                               NETWORK)
    width_per_group: int = option(
        BASE_WIDTH, _positive, "an int >= 1; bottleneck blocks only",
        "middle width of a bottleneck is width * width_per_group / 64 * groups", NETWORK)
    output_stride: Optional[int] = option(
        None, _choice(OUTPUT_STRIDES), "None, 8, 16 or 32; not with stride_block='last'",
        "stages past this stride keep their size and dilate their 3x3 convs instead "
        "(torchvision's replace_stride_with_dilation); None: no dilation", NETWORK)
    # -- how each block is built --------------------------------------------------------------
    preact: bool = option(False, _boolean, "True or False",
                          "pre-activation blocks (ResNet v2): BN and ReLU open each block",
                          BLOCK)
    stride_on: str = option("1x1", _choice(STRIDE_ON), "'1x1' or '3x3'",
                            "which conv of a bottleneck strides: the paper's 1x1, or the 3x3 "
                            "(torchvision v1.5)", BLOCK)
    shortcut: str = option("B", _choice(SHORTCUTS), "'B', 'A', 'C' or 'avg'",
                           "B: project where channels change; A: subsample and zero-pad; "
                           "C: project always; avg: ResNet-D pooling before the projection",
                           BLOCK)
    groups: int = option(1, _positive, "an int >= 1; bottleneck blocks only",
                         "groups of a bottleneck's middle conv (ResNeXt)", BLOCK)
    se_ratio: float = option(0.0, _interval(0, 1), "a number in [0, 1]",
                             "squeeze-and-excitation on every residual branch; 0 for none",
                             BLOCK)
    se_divisor: int = option(
        1, _positive, "an int >= 1",
        "squeeze width rounding: 1 rounds channels * se_ratio (Hu et al.); 8 makes it a "
        "multiple of 8, at least 8 (timm's SE)", BLOCK)
    eca: bool = option(False, _boolean, "True or False; not with se_ratio > 0",
                       "efficient channel attention (Wang et al. 2020, timm's ecaresnet): a "
                       "1-D conv across channels, its kernel size set by the width", BLOCK)
    anti_alias: Optional[str] = option(
        None, _choice(ANTI_ALIAS), "None, 'avg' or 'blur'; not with preact=True",
        "downsample after the 3x3 conv at stride 1: a 2x2 average pool (timm's resnetaa) or "
        "a [1, 2, 1] binomial blur (resnetblur), in the blocks and the stem", BLOCK)
    drop_path_rate: float = option(
        0.0, _interval(0, 1, high_open=True), "a number in [0, 1)",
        "stochastic depth: each residual branch is dropped per sample in training, the rate "
        "rising linearly from 0 at the first block to this at the last", BLOCK)
    zero_init_residual: bool = option(
        False, _boolean, "True or False; not with preact=True",
        "the last BN of each residual branch starts with gamma = 0", BLOCK)
    # -- what follows the last stage ----------------------------------------------------------
    head: Optional[str] = option("tutorial", _choice(HEADS), "'tutorial', 'fc' or None",
                                 "tutorial: pool, dropout, fc_01, dropout, fc_final; fc: "
                                 "pool, fc{classes}; None: no head", HEAD)
    classes: int = option(10, _positive, "an int >= 1", "classes of the classifier head",
                          HEAD)
    pooling: Optional[str] = option(
        None, _choice(POOLINGS), "None, 'avg', 'max', 'avgmax' or 'catavgmax'",
        "without a head: global pooling of the last stage; avgmax: the mean of average and "
        "max pooling, catavgmax: both concatenated (twice the channels)", HEAD)
    outputs: str = option("final", _choice(OUTPUTS), "'final' or 'stages' (headless only)",
                          "stages: the feature maps C2..C5 as a dict of outputs", HEAD)
    classifier_activation: Union[None, str, Callable] = option(
        "softmax", lambda v, n: validation.classifier_activation(v),
        "None, a callable or the name of a Keras activation",
        "activation of the classifier's last Dense layer", HEAD)
    dropout: float = option(TUTORIAL_DROPOUT, _interval(0, 1, high_open=True),
                            "a number in [0, 1)", "dropout rate of the tutorial head", HEAD)
    fc_units: int = option(TUTORIAL_FC_UNITS, _positive, "an int >= 1",
                           "units of the tutorial head's hidden Dense layer fc_01", HEAD)
    # -- settings of every layer --------------------------------------------------------------
    use_bias: bool = option(True, _boolean, "True or False",
                            "biases on every Conv2D (keras.applications) or none (torchvision)",
                            LAYER)
    bn_epsilon: float = option(BN_EPSILON, _interval(0, 1, low_open=True), "a number in (0, 1]",
                               "epsilon of every BatchNormalization (keras.applications')",
                               LAYER)
    bn_momentum: float = option(BN_MOMENTUM, _interval(0, 1, high_open=True),
                                "a number in [0, 1)",
                                "momentum of every BatchNormalization (PyTorch's 0.1)", LAYER)
    norm: str = option("batch", _choice(NORMS), "'batch' or 'group'",
                       "BatchNormalization, or GroupNormalization (Wu & He 2018, timm's "
                       "resnet50_gn) for small batches; bn_epsilon is the epsilon of both",
                       LAYER)
    norm_groups: int = option(32, _positive, "an int >= 1 dividing every normalised width",
                              "groups of every GroupNormalization (norm='group')", LAYER)
    kernel_initializer: Any = option(
        KERNEL_INITIALIZER, lambda v, n: validation.kernel_initializer(v),
        "a Keras initializer or its name", "initializer of every Conv2D kernel", LAYER)
    weight_decay: float = option(0.0, _interval(0, 1), "a number in [0, 1]",
                                 "the paper's weight decay on every kernel (L2 of wd / 2)",
                                 LAYER)
    name_prefix: str = option("", lambda v, n: validation.name_prefix(v),
                              "a string of letters, digits, '_', '.' or '-' (may be empty)",
                              "put in front of every layer name (two ResNets in one graph)",
                              LAYER)
    # -- the model ----------------------------------------------------------------------------
    input_shape: Shape = option(
        (DEFAULT_SIZE, DEFAULT_SIZE, 3), _input_shape,
        "(height, width, channels): sizes None or ints >= the downsampling, channels >= 1",
        "the input; height and width may be None (any size)", MODEL)
    name: Optional[str] = option(None, lambda v, n: validation.model_name(v),
                                 "None or a non-empty string without '/'",
                                 "the model's name; default resnet{depth}", MODEL)
    #: How the caller calls some options (``{"input_shape": "in_shape"}``), for messages.
    argument_names: InitVar[Optional[Mapping[str, str]]] = None

    def __post_init__(self, argument_names):
        names = dict(argument_names or {})
        for spec in dataclasses.fields(self):
            value = spec.metadata["check"](getattr(self, spec.name),
                                           names.get(spec.name, spec.name))
            object.__setattr__(self, spec.name, value)
        self._resolve()
        object.__setattr__(self, "_plan", _make_plan(self))
        if self.name == naming.model_name(self._plan.depth, self.name_prefix):
            object.__setattr__(self, "name", None)  # the default name, said or not
        validation.spatial_shape(names.get("input_shape", "input_shape"), self.input_shape,
                                 self._plan.min_size)
        if self.anti_alias == "avg":
            self._check_even(names.get("input_shape", "input_shape"))

    def _check_even(self, name):
        """A 2x2/2 average pool drops an odd last row that the strided shortcut keeps (in
        timm too): with anti_alias="avg" every strided block needs even sizes."""
        for axis, size in zip(("height", "width"), self.input_shape[:2]):
            if size is None:
                continue
            size = -(-size // 2)  # the stem's strided conv
            if self.stem != "cifar":
                size = size // 2  # its 2x2 average pool
            for stage in self._plan.stages:
                for block in stage:
                    if block.strides > 1:
                        if size % 2:
                            raise ValueError(
                                f"`anti_alias`='avg' halves with a 2x2 average pool, which "
                                f"drops an odd last row, and block res{block.stage}"
                                f"{block.label} gets a {axis} of {size} from `{name}`="
                                f"{self.input_shape}; pick a {axis} that stays even down to "
                                f"the last stride (a multiple of {self._plan.min_size}), or "
                                "anti_alias='blur'.")
                        size //= 2

    def _resolve(self):
        """Fill in what the depth's row implies and check the options that go together."""
        row = DEPTHS[self.depth]
        resolved = {"block_type": row.block_type if self.block_type is None else self.block_type,
                    "blocks": row.blocks if self.blocks is None else self.blocks}
        if self.widths is not None and len(self.widths) != len(resolved["blocks"]):
            raise ValueError(f"`widths` must list one positive integer per stage of `blocks` "
                             f"({len(resolved['blocks'])} stages). Received: "
                             f"widths={self.widths!r}")
        resolved["widths"] = stage_widths(len(resolved["blocks"])) if self.widths is None \
            else self.widths
        count = len(STEM_WIDTHS[self.stem])
        stem_width = STEM_WIDTHS[self.stem] if self.stem_width is None else self.stem_width
        if len(stem_width) != count:
            given = stem_width[0] if len(stem_width) == 1 else stem_width
            raise ValueError(f"`stem_width` for `stem`={self.stem!r} must be {count} positive "
                             f"integer{'s' if count > 1 else ''}. Received: stem_width={given!r}")
        resolved["stem_width"] = stem_width
        for key, value in resolved.items():
            object.__setattr__(self, key, value)
        if self.block_type == "basic" and (self.groups != 1 or
                                           self.width_per_group != BASE_WIDTH):
            raise ValueError(f"`groups`={self.groups} and `width_per_group`="
                             f"{self.width_per_group} apply to bottleneck blocks only; "
                             "`block_type`='basic' needs groups=1 and width_per_group=64.")
        if self.preact and self.zero_init_residual:
            raise ValueError("`zero_init_residual=True` does not go with `preact=True`: a "
                             "pre-activation branch ends in a conv, not a BN whose gamma could "
                             "start at zero.")
        if self.stem == "cifar" and self.stem_pool != "zeros":
            raise ValueError(f"`stem_pool`={self.stem_pool!r} sets the stem's downsampling, "
                             "and `stem`='cifar' has none: leave it 'zeros'.")
        if self.preact and self.stem_pool == "conv":
            raise ValueError("`stem_pool`='conv' (ResNet-RS: conv, BN, ReLU) does not go with "
                             "`preact=True`, whose stem ends in a bare conv.")
        if self.eca and self.se_ratio:
            raise ValueError(f"`eca=True` and `se_ratio`={self.se_ratio} are two channel "
                             "attentions on the same branch; pick one.")
        if self.anti_alias is not None:
            if self.preact:
                raise ValueError(f"`anti_alias`={self.anti_alias!r} is built for post-"
                                 "activation blocks (timm's resnetaa/resnetblur); it does not "
                                 "go with `preact=True`.")
            if self.block_type == "bottleneck" and self.stride_on != "3x3":
                raise ValueError(f"`anti_alias`={self.anti_alias!r} downsamples after a "
                                 "bottleneck's 3x3 conv: it needs `stride_on`='3x3'. "
                                 f"Received: stride_on={self.stride_on!r}")
            if self.stem_pool == "ignore":
                raise ValueError(f"`anti_alias`={self.anti_alias!r} replaces the stem's "
                                 "strided max pool, whose padding `stem_pool`='ignore' sets; "
                                 "leave stem_pool 'zeros' (or 'conv').")
        if self.output_stride is not None and self.stride_block != "first":
            raise ValueError(f"`output_stride`={self.output_stride} dilates the stages that "
                             "would stride in their first block; it needs "
                             "`stride_block`='first'.")
        if self.drop_path_rate and sum(resolved["blocks"]) < 2:
            raise ValueError(f"`drop_path_rate`={self.drop_path_rate} rises from 0 at the "
                             "first block to its value at the last, so it needs at least two "
                             f"blocks; `blocks`={resolved['blocks']} has one.")
        if self.outputs == "stages" and self.head is not None:
            raise ValueError("`outputs`='stages' builds a headless backbone: pass "
                             "`include_top=False` (or `head=None`) with it.")

    @property
    def plan(self) -> "Plan":
        """The blocks to build, stage by stage (:class:`Plan`)."""
        return self._plan

    @property
    def style(self) -> "BlockStyle":
        return BlockStyle.of(self)

    @property
    def model_name(self) -> str:
        """``name``, or ``{name_prefix}resnet{depth}``."""
        return self.name or naming.model_name(self._plan.depth, self.name_prefix)

    def replace(self, argument_names=None, **changes) -> "ResNetConfig":
        """A copy with ``changes`` applied and checked. Fields this config filled in from
        its depth or stem (``blocks``, ``widths``, ``stem_width``, ...) are filled in
        again from the new values, unless ``changes`` sets them.

        >>> ResNetConfig(depth=50).replace(depth=18).block_type
        'basic'
        """
        reject_unknown(changes, FIELDS, "ResNetConfig.replace")
        values = self.options()
        try:
            fresh = ResNetConfig(**{key: value for key, value in values.items()
                                    if key not in _DERIVED})
        except ValueError:  # the defaults alone do not fit: keep every field as it is
            fresh = None
        for key in _DERIVED:
            if fresh is not None and key not in changes and values[key] == getattr(fresh, key):
                values[key] = None  # it was the default: derive it again
        return ResNetConfig(**{**values, **changes}, argument_names=argument_names)

    def options(self) -> dict:
        """Every option as a dict, defaults included."""
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)}

    def count_params(self) -> Tuple[int, int]:
        """``(all, trainable)`` parameters of the built network, counted from the plan
        without building it: what ``model.count_params()`` and the sum of its trainable
        weights give (batch norms hold 2 trainable and 2 moving values per channel).

        >>> ResNetConfig(depth=50, head="fc", classes=1000).count_params()
        (25636712, 25583592)
        """
        return _count(self)

    def keras_applications(self) -> Optional[str]:
        """The keras.applications function of this network (``"ResNet50V2"``), or None
        where keras.applications has no such network; the head and input may differ."""
        return None if self.keras_applications_mismatch() else \
            f"ResNet{self._plan.depth}{'V2' if self.preact else ''}"

    def keras_applications_mismatch(self) -> list:
        """The options in which this config departs from every keras.applications ResNet."""
        row = DEPTHS.get(self._plan.depth)
        layout = (self.preact, self.stride_on, self.stride_block)
        wanted = {
            "depth": (self._plan.depth in (50, 101, 152) and row is not None and
                      self.blocks == row.blocks and self.block_type == "bottleneck"),
            "widths": self.widths == stage_widths(4),
            "stem": (self.stem, self.stem_width) == ("classic", (64,)),
            "stem_pool": self.stem_pool == "zeros",
            "preact/stride_on/stride_block": layout in ((False, "1x1", "first"),
                                                        (True, "3x3", "last")),
            "shortcut": self.shortcut == "B", "groups": self.groups == 1,
            "width_per_group": self.width_per_group == BASE_WIDTH,
            "se_ratio": not self.se_ratio, "eca": not self.eca,
            "anti_alias": self.anti_alias is None, "output_stride": self.output_stride is None,
            "norm": self.norm == "batch", "middle_kernel_size": self.middle_kernel_size ==
            (3, 3), "use_bias": self.use_bias, "head": self.head in ("fc", None)}
        return [argument for argument, ok in wanted.items() if not ok]


#: Fields that ``ResNetConfig`` fills in from others when they are None.
_DERIVED = ("blocks", "block_type", "widths", "stem_width")
#: Every option, in declaration order: ``FIELDS["groups"].metadata["doc"]``.
FIELDS = MappingProxyType({spec.name: spec for spec in dataclasses.fields(ResNetConfig)})
#: Options of every conv, batch norm and dense layer.
LAYER_OPTIONS = tuple(n for n, s in FIELDS.items() if s.metadata["group"] == LAYER)
#: Options of how a residual block is built.
BLOCK_OPTIONS = tuple(n for n, s in FIELDS.items() if s.metadata["group"] == BLOCK)


def reject_unknown(values, allowed, where):
    """``TypeError`` listing what ``where`` takes if ``values`` has another keyword."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise TypeError(f"Unknown option(s) {', '.join(unknown)} for {where}; its options "
                        f"are {', '.join(allowed)}.")


def keyword_signature(function, names, first=()):
    """``function``'s signature with its ``**options`` spelled out as the keyword-only
    options ``names``, with their declared defaults and types, so that ``help()`` and
    ``inspect.signature`` show what the function takes."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    taken = {p.name for p in kept}
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                               default=FIELDS[name].default, annotation=FIELDS[name].type)
             for name in names if name not in taken]
    return signature.replace(parameters=kept + extra)


@dataclass(frozen=True)
class BlockStyle:
    """How a block is built beyond its filters: the :data:`BLOCK_OPTIONS` of a config.

    >>> BlockStyle(stride_on="3x3").strided_conv(3), BlockStyle().strided_conv(2)
    (1, 0)
    """

    preact: bool = False
    stride_on: str = "1x1"
    shortcut: str = "B"
    groups: int = 1
    se_ratio: float = 0.0
    se_divisor: int = 1
    eca: bool = False
    anti_alias: Optional[str] = None
    drop_path_rate: float = 0.0
    zero_init_residual: bool = False

    @classmethod
    def of(cls, values):
        """The style of a config or of a dict of checked block options."""
        get = values.get if isinstance(values, Mapping) else \
            lambda key, default: getattr(values, key)
        return cls(**{key: get(key, FIELDS[key].default) for key in BLOCK_OPTIONS})

    def strided_conv(self, n_convs):
        """Index of the conv of the residual branch that carries the stride."""
        return 1 if n_convs == 3 and self.stride_on == "3x3" else 0

    def squeeze_width(self, channels):
        """Width of the squeeze conv of squeeze-and-excitation on ``channels``: rounded
        (``se_divisor=1``) or, as timm's SE, to the nearest multiple of ``se_divisor`` and
        at least that.

        >>> rounded, timm = BlockStyle(se_ratio=1/16), BlockStyle(se_ratio=1/16, se_divisor=8)
        >>> rounded.squeeze_width(64), timm.squeeze_width(64)
        (4, 8)
        """
        if self.se_divisor == 1:
            return max(1, round(channels * self.se_ratio))
        d = self.se_divisor
        return max(d, int(channels * self.se_ratio + d / 2) // d * d)

    @staticmethod
    def eca_kernel(channels):
        """Kernel size of efficient channel attention on ``channels`` (Wang et al. 2020,
        gamma 2, beta 1): the odd number nearest above ``(log2(channels) + 1) / 2``, at
        least 3.

        >>> [BlockStyle.eca_kernel(c) for c in (64, 256, 2048)]
        [3, 5, 7]
        """
        t = int(abs(math.log(channels, 2) + 1) / 2)
        return max(t if t % 2 else t + 1, 3)

    def shortcut_kind(self, in_channels, out_channels, strides):
        """``identity``, ``subsample``, ``zeros`` (A), ``projection`` or ``avg_projection``."""
        resize = max(strides) > 1
        if self.shortcut == "C":
            return "projection"
        if in_channels == out_channels:
            return "subsample" if resize else "identity"
        if self.shortcut == "A":
            return "zeros"
        return "avg_projection" if self.shortcut == "avg" else "projection"


@dataclass(frozen=True)
class BlockPlan:
    """One block to build: where it sits, its filters, stride and shortcut kind."""

    stage: int
    label: str
    filters: tuple
    strides: int
    shortcut: str
    #: Stochastic depth rate of the residual branch (0: no drop-path layer).
    drop_path: float = 0.0
    #: Dilation of the 3x3 convs; the block's first 3x3 conv has ``first_dilation`` (the
    #: previous stage's, where a stage starts to dilate instead of striding).
    dilation: int = 1
    first_dilation: int = 1

    def names(self, prefix=""):
        return naming.BlockNames(self.stage, self.label, prefix)


@dataclass(frozen=True)
class Plan:
    """The blocks of a config, stage by stage."""

    depth: int
    block_type: str
    blocks: tuple
    widths: tuple
    stem: str
    stem_widths: tuple
    style: BlockStyle
    stages: tuple  # one tuple of BlockPlan per stage

    @property
    def min_size(self):
        """Total downsampling: the smallest input height/width the network accepts."""
        strided = sum(1 for stage in self.stages for b in stage if b.strides > 1)
        return STEM_STRIDES[self.stem] * 2 ** strided

    @property
    def features(self):
        """Channels of the last stage's output."""
        return self.stages[-1][-1].filters[-1]

    def labels(self):
        """The block labels of each stage."""
        return [[block.label for block in stage] for stage in self.stages]


def _make_plan(config):
    """Lay out every block of ``config``: labels, filters, strides, shortcut kinds."""
    row = DEPTHS[config.depth]
    # A stage list equal to the row's is that row: it keeps the Caffe labels (res4b22).
    custom = config.blocks != row.blocks
    style = BlockStyle.of(config)
    channels = config.stem_width[-1]
    stages = []
    n_stages = len(config.blocks)
    total_blocks, block_index = sum(config.blocks), 0
    net_stride, dilation = STEM_STRIDES[config.stem], 1
    if config.norm == "group":
        _check_groups(config.norm_groups, "stem_width", config.stem_width)
    for index, (n_blocks, width) in enumerate(zip(config.blocks, config.widths)):
        stage = FIRST_STAGE + index
        numbered = None if custom else (stage in row.numbered_stages or None)
        filters = block_filters(width, config.block_type, config.groups,
                                config.width_per_group)
        if not filters[0]:
            raise ValueError(
                f"`widths`[{index}]={width} with `width_per_group`={config.width_per_group} "
                f"gives stage {stage}'s bottlenecks a middle width of int({width} * "
                f"{config.width_per_group} / {BASE_WIDTH}) = 0 per group; the width times "
                f"`width_per_group` must be at least {BASE_WIDTH}.")
        if config.norm == "group":
            _check_groups(config.norm_groups, f"widths[{index}]", filters)
        stage_plan = []
        # As timm's make_blocks: a stage that would pass the output stride dilates instead.
        previous_dilation = dilation
        if index > 0 and config.stride_block == "first":
            if config.output_stride is not None and net_stride >= config.output_stride:
                dilation *= 2
            else:
                net_stride *= 2
        for i, label in enumerate(naming.stage_labels(n_blocks, numbered)):
            if config.stride_block == "first":
                strides = 2 if i == 0 and index > 0 and dilation == previous_dilation else 1
            else:
                strides = 2 if i == n_blocks - 1 and index < n_stages - 1 else 1
            shortcut = style.shortcut_kind(channels, filters[-1], (strides, strides))
            if shortcut == "zeros" and filters[-1] < channels:
                narrows = f"`widths`={config.widths} narrows there" if index else \
                    f"`stem_width`={config.stem_width} is wider than `widths`=" \
                    f"{config.widths} starts"
                raise ValueError(f"`shortcut`='A' pads channels with zeros, so it cannot shrink "
                                 f"{channels} channels to {filters[-1]} in stage {stage}; "
                                 f"{narrows}.")
            # timm's linear rule: 0 at the first block, drop_path_rate at the last.
            rate = config.drop_path_rate * (block_index / (total_blocks - 1)) \
                if config.drop_path_rate else 0.0
            stage_plan.append(BlockPlan(stage, label, filters, strides, shortcut, rate,
                                        dilation, previous_dilation if i == 0 else dilation))
            channels = filters[-1]
            block_index += 1
        stages.append(tuple(stage_plan))
    return Plan(depth_of(config.blocks, config.block_type), config.block_type, config.blocks,
                config.widths, config.stem, config.stem_width, style, tuple(stages))


def part_config(options, widths_name, widths=None):
    """``(config, norm)`` for checking the options of one part of a network (a block, a
    stem): the config runs every check but GroupNorm's, which holds for the part's own
    ``widths`` (named ``widths_name`` in the message; the config's stem widths where None),
    not for a default network's. ``norm`` is the checked ``norm`` option."""
    norm = validation.one_of("norm", options.get("norm", "batch"), NORMS)
    config = ResNetConfig(input_shape=(None, None, 1), **{**options, "norm": "batch"})
    if norm == "group":
        _check_groups(config.norm_groups, widths_name,
                      config.stem_width if widths is None else widths)
    return config, norm


def _check_groups(groups, name, widths):
    """``ValueError`` unless GroupNorm's ``groups`` divide every width of ``widths``."""
    bad = [w for w in widths if w % groups]
    if bad:
        raise ValueError(f"`norm`='group' splits every normalised width into `norm_groups`="
                         f"{groups} groups, and `{name}` gives the width {bad[0]}, "
                         "which it does not divide.")


def _count(config):
    """Parameters of every layer the builder makes for ``config`` (see blocks.py, stems.py
    and heads.py for the layers), as ``(all, trainable)``."""
    total, moving = 0, 0
    bias = config.use_bias
    preact = config.preact

    def conv(c_in, c_out, kernel, groups=1, with_bias=bias):
        return kernel[0] * kernel[1] * (c_in // groups) * c_out + (c_out if with_bias else 0)

    def bn(channels):
        nonlocal moving
        if config.norm == "group":  # gamma and beta, no moving statistics
            return 2 * channels
        moving += 2 * channels
        return 4 * channels

    channels = config.input_shape[2]
    kernel = (7, 7) if config.stem == "classic" else (3, 3)
    for i, width in enumerate(config.stem_width):
        last = i == len(config.stem_width) - 1
        total += conv(channels, width, kernel, with_bias=bias and not (preact and not last))
        if not (preact and last):
            total += bn(width)
        channels = width
    if config.stem_pool == "conv":
        total += conv(channels, channels, (3, 3)) + bn(channels)
    k = config.middle_kernel_size
    style = config.style
    for stage in config.plan.stages:
        for block in stage:
            filters = block.filters
            kernels = ((1, 1), k, (1, 1)) if len(filters) == 3 else (k, k)
            if preact:
                total += bn(channels)
            c_in = channels
            for i, (f, kernel_i) in enumerate(zip(filters, kernels)):
                last = i == len(filters) - 1
                groups = config.groups if len(filters) == 3 and i == 1 else 1
                total += conv(c_in, f, kernel_i, groups, bias and not (preact and not last))
                if not (preact and last):
                    total += bn(f)
                c_in = f
            if config.eca:
                total += style.eca_kernel(filters[-1])
            if config.se_ratio:
                squeeze = style.squeeze_width(filters[-1])
                total += conv(filters[-1], squeeze, (1, 1), with_bias=True)
                total += conv(squeeze, filters[-1], (1, 1), with_bias=True)
            if block.shortcut in ("projection", "avg_projection"):
                total += conv(channels, filters[-1], (1, 1))
                if not preact:
                    total += bn(filters[-1])
            channels = filters[-1]
    if preact:
        total += bn(channels)
    if config.head == "tutorial":
        total += channels * config.fc_units + config.fc_units
        channels = config.fc_units
    if config.head is not None:
        total += channels * config.classes + config.classes
    return total, total - moving


def plan(depth: int = 50, **options) -> Plan:
    """The blocks a network would have, without building it: ``ResNetConfig(depth,
    **options).plan``, for any input size.

    >>> p = plan(101)
    >>> p.block_type, p.blocks, [b.label for b in p.stages[1]]
    ('bottleneck', (3, 4, 23, 3), ['a', 'b1', 'b2', 'b3'])
    >>> plan(18, blocks=(1, 1)).depth, plan(50, groups=32, width_per_group=4).stages[0][0].filters
    (6, (128, 128, 256))
    """
    reject_unknown(options, [n for n in FIELDS if n not in ("depth", "input_shape")], "plan")
    return ResNetConfig(depth=depth, input_shape=(None, None, 3), **options).plan

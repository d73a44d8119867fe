"""Named presets: every ResNet variant people cite, each a named :class:`ResNetConfig`.

:data:`PRESETS` maps a name to a :class:`Preset`: its config (natural input size, class
count and the options that make the variant), and the published parameter count it must
have (``None`` where no exact figure is published) with the source of that figure.
:func:`kresnet.build` builds one with keras.applications' argument conventions.
"""

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

from kresnet.config import ResNetConfig
from kresnet.depths import DEPTHS


@dataclass(frozen=True)
class Preset:
    """One named configuration. ``options``: what it sets beyond a plain ResNet of its
    ``depth`` with an ``fc`` head. ``params``: parameters at ``input_size`` with the
    ``classes``-way ``fc`` head, as published in ``source``: trainable ones, or all of them
    (``model.count_params()``, batch-norm statistics included) where ``counted`` is
    ``"total"``, as keras.applications reports them.

    >>> PRESETS["resnet50d"].config.stem, PRESETS["resnet20"].input_size
    ('deep', 32)
    """

    name: str
    config: ResNetConfig
    description: str
    options: Mapping
    params: Optional[int] = None
    source: str = ""
    counted: str = "trainable"

    @property
    def depth(self):
        return self.config.depth

    @property
    def input_size(self):
        return self.config.input_shape[0]

    @property
    def classes(self):
        return self.config.classes


_TORCHVISION = "torchvision.models weights meta num_params"
_PYTORCHCV = "osmr/imgclsmob (pytorchcv) model tests"
_KERAS = "keras.applications count_params()"
_RESNET_D = "fast.ai xresnet docs and pytorchcv resneta*b (the 'd' average pooling adds none)"
_NO_BIAS = {"use_bias": False}
_V1_5 = {"use_bias": False, "stride_on": "3x3"}
_V2 = {"preact": True, "stride_block": "last", "stride_on": "3x3", "use_bias": True}
_V2_PAPER = {"preact": True, "stride_on": "3x3", "use_bias": False}
_C = {**_V1_5, "stem": "deep"}
_D = {**_C, "shortcut": "avg"}
_CIFAR = {"block_type": "basic", "widths": (16, 32, 64), "stem": "cifar", "shortcut": "A",
          "use_bias": False}

_ROWS = [
    # name, depth, description, params, source, options
    ("resnet18", 18, "He et al. 2015, basic blocks", 11_689_512, _TORCHVISION, _NO_BIAS),
    ("resnet34", 34, "He et al. 2015, basic blocks", 21_797_672, _TORCHVISION, _NO_BIAS),
    ("resnet50", 50, "He et al. 2015 / Caffe: stride on the first 1x1, no conv bias",
     25_557_032, _TORCHVISION, _NO_BIAS),
    ("resnet101", 101, "He et al. 2015 / Caffe", 44_549_160, _TORCHVISION, _NO_BIAS),
    ("resnet152", 152, "He et al. 2015 / Caffe", 60_192_808, _TORCHVISION, _NO_BIAS),
    ("resnet200", 200, "ResNet-200 with the original post-activation blocks (pytorchcv's); "
     "He et al. 2016 trained it pre-activated", 64_673_832, _PYTORCHCV, _NO_BIAS),
    ("resnet50_v1_5", 50, "torchvision 'v1.5': stride on the 3x3 conv", 25_557_032,
     _TORCHVISION, _V1_5),
    ("resnet101_v1_5", 101, "torchvision 'v1.5'", 44_549_160, _TORCHVISION, _V1_5),
    ("resnet152_v1_5", 152, "torchvision 'v1.5'", 60_192_808, _TORCHVISION, _V1_5),
    ("resnet50b", 50, "Bag of Tricks ResNet-B: stride on the 3x3 conv", 25_557_032,
     _TORCHVISION, _V1_5),
    ("resnet50c", 50, "ResNet-B + C: deep 3x3 stem (32, 32, 64)", 25_576_264, _RESNET_D, _C),
    ("resnet50d", 50, "ResNet-B + C + D: average-pooled projection shortcuts", 25_576_264,
     _RESNET_D, _D),
    ("resnet101d", 101, "ResNet-D", 44_568_392, _RESNET_D, _D),
    ("resnet152d", 152, "ResNet-D", 60_212_040, _RESNET_D, _D),
    ("resnet50v2", 50, "keras.applications ResNet50V2 (pre-activation)", 25_613_800, _KERAS,
     _V2),
    ("resnet101v2", 101, "keras.applications ResNet101V2", 44_675_560, _KERAS, _V2),
    ("resnet152v2", 152, "keras.applications ResNet152V2", 60_380_648, _KERAS, _V2),
    ("resnet50v2_paper", 50, "He et al. 2016 pre-activation, stride in the first block",
     None, "", _V2_PAPER),
    ("resnet101v2_paper", 101, "He et al. 2016 pre-activation", None, "", _V2_PAPER),
    ("resnet152v2_paper", 152, "He et al. 2016 pre-activation", None, "", _V2_PAPER),
    ("resnext50_32x4d", 50, "Xie et al. 2017, 32 groups of 4 channels", 25_028_904,
     _TORCHVISION, {**_V1_5, "groups": 32, "width_per_group": 4}),
    ("resnext101_32x8d", 101, "Xie et al. 2017, 32 groups of 8 channels", 88_791_336,
     _TORCHVISION, {**_V1_5, "groups": 32, "width_per_group": 8}),
    ("wide_resnet50_2", 50, "Zagoruyko & Komodakis 2016 via torchvision: 2x wide middle",
     68_883_240, _TORCHVISION, {**_V1_5, "width_per_group": 128}),
    ("wide_resnet101_2", 101, "2x wide middle", 126_886_696, _TORCHVISION,
     {**_V1_5, "width_per_group": 128}),
    ("seresnet50", 50, "Hu et al. 2018: squeeze-and-excitation, ratio 1/16", 28_088_024,
     _PYTORCHCV, {**_NO_BIAS, "se_ratio": 1 / 16}),
]
# timm's second tier (timm 1.0.31). Convs without bias and stride on the 3x3 throughout.
_TIMM = "timm 1.0.31 sum(p.numel() for p in model.parameters())"
_TIMM_SE = {"se_ratio": 1 / 16, "se_divisor": 8}
_RS = {**_D, "stem_pool": "conv", "se_ratio": 0.25, "se_divisor": 8}
_TIERED = {**_D, "stem_width": (24, 32, 64)}
_ROWS += [
    ("resnet10t", 18, "timm: 1 basic block per stage, tiered deep stem (24, 32, 64), ResNet-D "
     "shortcuts", 5_435_488, _TIMM, {**_TIERED, "blocks": (1, 1, 1, 1)}),
    ("resnet14t", 50, "timm: 1 bottleneck per stage, tiered deep stem, ResNet-D shortcuts",
     10_081_632, _TIMM, {**_TIERED, "blocks": (1, 1, 1, 1)}),
    ("resnet18d", 18, "ResNet-D with basic blocks", 11_708_744, _TIMM, _D),
    ("resnet34d", 34, "ResNet-D with basic blocks", 21_816_904, _TIMM, _D),
    # Two blocks per stage: depth 18's row, whose block kind the options change.
    ("resnet26", 18, "timm: 2 bottlenecks per stage", 15_995_176, _TIMM,
     {**_V1_5, "block_type": "bottleneck"}),
    ("resnet26d", 18, "timm: 2 bottlenecks per stage, ResNet-D", 16_014_408, _TIMM,
     {**_D, "block_type": "bottleneck"}),
    ("resnet200d", 200, "ResNet-D at depth 200", 64_693_064, _TIMM, _D),
    ("resnetaa50", 50, "timm: anti-aliased by 2x2 average pools (Zhang 2019)", 25_557_032,
     _TIMM, {**_V1_5, "anti_alias": "avg"}),
    ("resnetaa50d", 50, "ResNet-D anti-aliased by average pools", 25_576_264, _TIMM,
     {**_D, "anti_alias": "avg"}),
    ("resnetblur50", 50, "timm: anti-aliased by a [1, 2, 1] binomial blur (BlurPool)",
     25_557_032, _TIMM, {**_V1_5, "anti_alias": "blur"}),
    ("resnetblur50d", 50, "ResNet-D with the binomial blur", 25_576_264, _TIMM,
     {**_D, "anti_alias": "blur"}),
    ("ecaresnet50d", 50, "ResNet-D with efficient channel attention (Wang et al. 2020)",
     25_576_350, _TIMM, {**_D, "eca": True}),
    ("ecaresnet101d", 101, "ResNet-D with efficient channel attention", 44_568_563, _TIMM,
     {**_D, "eca": True}),
    ("ecaresnet26t", 18, "timm: 2 bottlenecks per stage, tiered stem, ECA", 16_011_916, _TIMM,
     {**_TIERED, "block_type": "bottleneck", "eca": True}),
    ("seresnet18", 18, "timm's SE-ResNet-18 (squeeze width a multiple of 8)", 11_779_624,
     _TIMM, {**_V1_5, **_TIMM_SE}),
    ("seresnet101", 101, "timm's SE-ResNet-101", 49_326_872, _TIMM, {**_V1_5, **_TIMM_SE}),
    ("seresnext50_32x4d", 50, "timm's SE-ResNeXt-50 32x4d", 27_559_896, _TIMM,
     {**_V1_5, **_TIMM_SE, "groups": 32, "width_per_group": 4}),
    ("resnext50d_32x4d", 50, "ResNeXt-50 32x4d with ResNet-D", 25_048_136, _TIMM,
     {**_D, "groups": 32, "width_per_group": 4}),
    ("resnet50_gn", 50, "timm: GroupNorm of 32 groups instead of BatchNorm (Wu & He 2018)",
     25_557_032, _TIMM, {**_V1_5, "norm": "group", "bn_epsilon": 1e-5}),
]
#: ResNet-RS (Bello et al. 2021) as timm builds it: ResNet-D, SE of ratio 1/4, and a 3x3/2
#: conv instead of the stem's max pool; (blocks, parameters) per depth.
_RS_DEPTHS = {50: ((3, 4, 6, 3), 35_691_912), 101: ((3, 4, 23, 3), 63_618_696),
              152: ((3, 8, 36, 3), 86_621_576), 200: ((3, 24, 36, 3), 93_209_992),
              270: ((4, 29, 53, 4), 129_861_448), 350: ((4, 36, 72, 4), 163_956_168),
              420: ((4, 44, 87, 4), 191_891_656)}
for _depth, (_blocks, _params) in _RS_DEPTHS.items():
    _ROWS.append((f"resnetrs{_depth}", 50, f"ResNet-RS-{_depth} (Bello et al. 2021, timm)",
                  _params, _TIMM, {**_RS, "blocks": _blocks}))
#: The size timm trains each preset at, where it is not 224.
_SIZES = {"resnet10t": 176, "resnet14t": 176, "resnet101d": 256, "resnet152d": 256,
          "resnet200d": 256, "ecaresnet26t": 256, "resnetrs50": 160, "resnetrs101": 192,
          "resnetrs152": 256, "resnetrs200": 256, "resnetrs270": 256, "resnetrs350": 288,
          "resnetrs420": 320}
_CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
for _depth, _params in _CIFAR_PARAMS.items():
    _n = (_depth - 2) // 6
    # Depth 18 only supplies the basic block type; blocks and widths override the rest.
    _ROWS.append((f"resnet{_depth}", 18, f"He et al. 2015 section 4.2 CIFAR net, 3 stages of "
                  f"{_n} basic blocks, shortcut A", _params,
                  "He et al. 2015 Table 6 (rounded: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M)",
                  {**_CIFAR, "blocks": (_n, _n, _n)}))

def _preset(name, depth, description, params, source, options):
    if DEPTHS[depth].block_type == "basic" and "block_type" not in options:
        # A basic block strides its first 3x3 either way: stride_on says nothing there.
        options = {k: v for k, v in options.items() if k != "stride_on"}
    cifar = options.get("stem") == "cifar"
    size = 32 if cifar else _SIZES.get(name, 224)
    config = ResNetConfig(depth=depth, head="fc", classes=10 if cifar else 1000,
                          input_shape=(size, size, 3), name=name, **options)
    return Preset(name, config, description, MappingProxyType(dict(options)), params,
                  source, counted="total" if source == _KERAS else "trainable")


PRESETS = MappingProxyType({row[0]: _preset(*row) for row in _ROWS})

"""Published ImageNet weights by name: the registry :data:`WEIGHTS`, and the way from a name
to weights in a model.

A name is the model's name where the weights were published, a dot and timm's tag:
``"resnet50.tv2_in1k"`` (torchvision's IMAGENET1K_V2), ``"resnet50d.ra2_in1k"`` (timm),
``"resnet50.keras_in1k"`` (keras.applications' conversion of the Caffe ResNet-50). The part
before the dot is a key of :data:`kresnet.pytorch.ARCHITECTURES` for torch weights (so
``resnet50`` there is torchvision's v1.5 net, kresnet's ``resnet50_v1_5``), a kresnet
preset for keras.applications' weights. Each entry carries its address, hash, published
top-1 and the preprocessing its top-1 was measured with.

The way in (:mod:`kresnet.downloads`): downloaded once, checked against the published
hash, converted once, then read from the cache.
"""

from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional, Tuple

from kresnet.config import ResNetConfig
from kresnet.presets import PRESETS
from kresnet.torch_layout import ARCHITECTURES, TORCH_OPTIONS, torch_config

#: ImageNet's mean and standard deviation of 0-1 RGB images, and the "inception" 0.5 / 0.5.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION = (0.5, 0.5, 0.5)
#: The Caffe mean pixel (RGB order, 0-1 scale) and the step of one grey level.
CAFFE_MEAN = (123.68 / 255, 116.779 / 255, 103.939 / 255)
CAFFE_STD = (1 / 255,) * 3


@dataclass(frozen=True)
class Weights:
    """One published set of ImageNet-1k weights.

    ``mean`` and ``std`` are per RGB channel of images scaled to 0-1: the model takes
    ``(x / 255 - mean) / std``, in BGR order where ``mode`` is ``"caffe"``. ``mode`` is the
    :func:`kresnet.preprocess_input` mode that gives it. ``crop_pct`` is the centre crop's
    share of the resized image (``input_size / crop_pct`` is the resize) and ``top1`` the
    published ImageNet-1k validation top-1 at ``input_size`` with that crop, from
    ``top1_source``. ``file_hash`` is what the download is checked against:
    ``hash_kind`` ``"sha256-prefix"`` (torchvision's file names carry the first hex digits
    of the file's SHA-256; torch.hub checks those) or ``"md5"`` (keras.applications' own
    check); ``None`` where no hash is published to kresnet.

    >>> WEIGHTS["resnet50.tv2_in1k"].top1, WEIGHTS["resnet50.tv2_in1k"].preset
    (80.858, 'resnet50_v1_5')
    """

    name: str
    source: str
    url: str
    top1: float
    top1_source: str
    input_size: int
    crop_pct: Optional[float]
    interpolation: Optional[str]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    licence: str
    mode: str = "torch"
    file_hash: Optional[str] = None
    hash_kind: Optional[str] = None
    test_input_size: Optional[int] = None

    @property
    def arch(self) -> str:
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.name.partition(".")[2]

    @property
    def torch(self) -> bool:
        """True for torchvision's and timm's weights, converted with ``from_torch``."""
        return self.source != "keras.applications"

    @property
    def preset(self) -> str:
        """The kresnet preset that the weights' network is, or is built from."""
        return ARCHITECTURES[self.arch][0] if self.torch else self.arch

    @property
    def options(self) -> dict:
        """What the weights' network sets beyond :attr:`preset`: torch's BN epsilon, convs
        without bias and the architecture's own options (``{}`` for keras.applications')."""
        if self.torch:
            return {**TORCH_OPTIONS, **ARCHITECTURES[self.arch][1]}
        # The Caffe models' convs have biases (kresnet's resnet50 preset counts without).
        return {"use_bias": True}

    @property
    def extra_options(self) -> dict:
        """The options the architecture adds to :attr:`preset` beyond BN epsilon and conv
        bias (timm's ``resnet18d``: the deep stem and average-pooled shortcut); ``{}`` where
        the network is the preset's own and ``kresnet.build(preset, weights=tag)`` loads it."""
        return {k: v for k, v in self.options.items() if k not in ("bn_epsilon", "use_bias")}

    @property
    def network(self) -> ResNetConfig:
        """The config of the network the weights were trained as (at its natural size)."""
        if self.torch:
            return torch_config(self.arch)
        return PRESETS[self.preset].config.replace(**self.options)

    @property
    def file_name(self) -> str:
        """The name of the downloaded file in the cache."""
        if self.source == "timm":
            return f"{self.name}.safetensors"
        return self.url.rsplit("/", 1)[1]


_TORCHVISION_TOP1 = "torchvision weights meta acc@1 (resize 256 or 232, centre crop 224)"
_TIMM_TOP1 = "timm results/results-imagenet.csv at input_size"
_KERAS_TOP1 = "keras.io applications table"
_TV_BASE = "https://download.pytorch.org/models/"
_HF = "https://huggingface.co/timm/{}/resolve/main/model.safetensors"

# torchvision's weights under timm's tags: name, file, acc@1, resize before the 224 crop.
_TORCHVISION = [
    ("resnet18.tv_in1k", "resnet18-f37072fd.pth", 69.758, 256),
    ("resnet34.tv_in1k", "resnet34-b627a593.pth", 73.314, 256),
    ("resnet50.tv_in1k", "resnet50-0676ba61.pth", 76.130, 256),
    ("resnet50.tv2_in1k", "resnet50-11ad3fa6.pth", 80.858, 232),
    ("resnet101.tv_in1k", "resnet101-63fe2227.pth", 77.374, 256),
    ("resnet101.tv2_in1k", "resnet101-cd907fc2.pth", 81.886, 232),
    ("resnet152.tv_in1k", "resnet152-394f9c45.pth", 78.312, 256),
    ("resnet152.tv2_in1k", "resnet152-f82ba261.pth", 82.284, 232),
    ("resnext50_32x4d.tv_in1k", "resnext50_32x4d-7cdf4587.pth", 77.618, 256),
    ("resnext50_32x4d.tv2_in1k", "resnext50_32x4d-1a0047aa.pth", 81.198, 232),
    ("resnext101_32x8d.tv_in1k", "resnext101_32x8d-8ba56ff5.pth", 79.312, 256),
    ("resnext101_32x8d.tv2_in1k", "resnext101_32x8d-110c445d.pth", 82.834, 232),
    ("resnext101_64x4d.tv_in1k", "resnext101_64x4d-173b62eb.pth", 83.246, 232),
    ("wide_resnet50_2.tv_in1k", "wide_resnet50_2-95faca4d.pth", 78.468, 256),
    ("wide_resnet50_2.tv2_in1k", "wide_resnet50_2-9ba9bcbe.pth", 81.602, 232),
    ("wide_resnet101_2.tv_in1k", "wide_resnet101_2-32ee1156.pth", 78.848, 256),
    ("wide_resnet101_2.tv2_in1k", "wide_resnet101_2-d733dc28.pth", 82.510, 232),
]

_I, _N = IMAGENET_MEAN, INCEPTION
_A, _C, _BC, _BL = "apache-2.0", "cc-by-nc-4.0", "bicubic", "bilinear"
# timm's weights (hosted on the Hugging Face Hub as safetensors): name, top-1, input size,
# test input size, crop_pct, interpolation, mean (std is ImageNet's for _I, 0.5 for _N),
# licence; every fact as timm 1.0.31's pretrained_cfg and results-imagenet.csv give it.
_TIMM = [
    ("resnet18.a1_in1k", 71.504, 224, 288, 0.95, _BC, _I, _A),
    ("resnet18.a2_in1k", 70.634, 224, 288, 0.95, _BC, _I, _A),
    ("resnet18.a3_in1k", 65.670, 160, 224, 0.95, _BC, _I, _A),
    ("resnet18.fb_ssl_yfcc100m_ft_in1k", 72.636, 224, None, 0.875, _BL, _I, _C),
    ("resnet18.fb_swsl_ig1b_ft_in1k", 73.286, 224, None, 0.875, _BL, _I, _C),
    ("resnet18.gluon_in1k", 70.844, 224, None, 0.875, _BC, _I, _A),
    ("resnet34.a1_in1k", 76.420, 224, 288, 0.95, _BC, _I, _A),
    ("resnet34.a2_in1k", 75.520, 224, 288, 0.95, _BC, _I, _A),
    ("resnet34.a3_in1k", 70.580, 160, 224, 0.95, _BC, _I, _A),
    ("resnet34.bt_in1k", 75.176, 224, 288, 0.875, _BC, _I, _A),
    ("resnet34.gluon_in1k", 74.574, 224, None, 0.875, _BC, _I, _A),
    ("resnet34.ra4_e3600_r224_in1k", 77.492, 224, 288, 0.9, _BC, _N, _A),
    ("resnet50.a1_in1k", 80.382, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.a1h_in1k", 79.264, 176, 224, 0.9, _BC, _I, _A),
    ("resnet50.a2_in1k", 79.828, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.a3_in1k", 75.994, 160, 224, 0.95, _BC, _I, _A),
    ("resnet50.am_in1k", 79.004, 224, None, 0.875, _BC, _I, _A),
    ("resnet50.b1k_in1k", 79.564, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.b2k_in1k", 79.388, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.bt_in1k", 78.444, 224, 288, 0.875, _BC, _I, _A),
    ("resnet50.c1_in1k", 79.766, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.c2_in1k", 79.868, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.d_in1k", 79.904, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50.fb_ssl_yfcc100m_ft_in1k", 79.252, 224, None, 0.875, _BL, _I, _C),
    ("resnet50.fb_swsl_ig1b_ft_in1k", 81.146, 224, None, 0.875, _BL, _I, _C),
    ("resnet50.gluon_in1k", 77.580, 224, None, 0.875, _BC, _I, _A),
    ("resnet50.ra_in1k", 78.820, 224, 288, 0.875, _BC, _I, _A),
    ("resnet50.ram_in1k", 79.034, 224, 288, 0.875, _BC, _I, _A),
    ("resnet101.a1_in1k", 81.494, 224, 288, 0.95, _BC, _I, _A),
    ("resnet101.a1h_in1k", 81.950, 224, 288, 0.95, _BC, _I, _A),
    ("resnet101.a2_in1k", 81.344, 224, 288, 0.95, _BC, _I, _A),
    ("resnet101.a3_in1k", 77.928, 160, 224, 0.95, _BC, _I, _A),
    ("resnet101.gluon_in1k", 79.306, 224, None, 0.875, _BC, _I, _A),
    ("resnet152.a1_in1k", 81.998, 224, 288, 0.95, _BC, _I, _A),
    ("resnet152.a1h_in1k", 82.818, 224, 288, 0.95, _BC, _I, _A),
    ("resnet152.a2_in1k", 81.764, 224, 288, 0.95, _BC, _I, _A),
    ("resnet152.a3_in1k", 78.896, 160, 224, 0.95, _BC, _I, _A),
    ("resnet152.gluon_in1k", 79.712, 224, None, 0.875, _BC, _I, _A),
    ("resnext50_32x4d.a1_in1k", 80.526, 224, 288, 0.95, _BC, _I, _A),
    ("resnext50_32x4d.a1h_in1k", 81.140, 224, 288, 0.95, _BC, _I, _A),
    ("resnext50_32x4d.a2_in1k", 80.444, 224, 288, 0.95, _BC, _I, _A),
    ("resnext50_32x4d.a3_in1k", 77.732, 160, 224, 0.95, _BC, _I, _A),
    ("resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k", 80.316, 224, None, 0.875, _BL, _I, _C),
    ("resnext50_32x4d.fb_swsl_ig1b_ft_in1k", 82.162, 224, None, 0.875, _BL, _I, _C),
    ("resnext50_32x4d.gluon_in1k", 79.354, 224, None, 0.875, _BC, _I, _A),
    ("resnext50_32x4d.ra_in1k", 79.800, 224, 288, 0.875, _BC, _I, _A),
    ("resnext101_32x8d.fb_ssl_yfcc100m_ft_in1k", 81.620, 224, None, 0.875, _BL, _I, _C),
    ("resnext101_32x8d.fb_swsl_ig1b_ft_in1k", 84.276, 224, None, 0.875, _BL, _I, _C),
    ("resnext101_32x8d.fb_wsl_ig1b_ft_in1k", 82.720, 224, None, 0.875, _BL, _I, _C),
    ("resnext101_64x4d.c1_in1k", 82.446, 224, 288, 0.95, _BC, _I, _A),
    ("resnext101_64x4d.gluon_in1k", 80.640, 224, None, 0.875, _BC, _I, _A),
    ("wide_resnet50_2.racm_in1k", 81.466, 224, 288, 0.875, _BC, _I, _A),
    ("resnet18d.ra2_in1k", 72.296, 224, 288, 0.875, _BC, _I, _A),
    ("resnet18d.ra4_e3600_r224_in1k", 74.356, 224, 288, 0.9, _BC, _N, _A),
    ("resnet34d.ra2_in1k", 77.108, 224, 288, 0.875, _BC, _I, _A),
    ("resnet50d.a1_in1k", 80.730, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50d.a2_in1k", 80.268, 224, 288, 0.95, _BC, _I, _A),
    ("resnet50d.a3_in1k", 77.222, 160, 224, 0.95, _BC, _I, _A),
    ("resnet50d.gluon_in1k", 79.080, 224, None, 0.875, _BC, _I, _A),
    ("resnet50d.ra2_in1k", 80.546, 224, 288, 0.875, _BC, _I, _A),
    ("resnet50d.ra4_e3600_r224_in1k", 80.956, 224, 288, 0.95, _BC, _N, _A),
    ("resnet101d.gluon_in1k", 80.466, 224, None, 0.875, _BC, _I, _A),
    ("resnet101d.ra2_in1k", 82.254, 256, 320, 0.95, _BC, _I, _A),
    ("resnet152d.gluon_in1k", 80.476, 224, None, 0.875, _BC, _I, _A),
    ("resnet152d.ra2_in1k", 83.160, 256, 320, 0.95, _BC, _I, _A),
    ("resnet200d.ra2_in1k", 83.250, 256, 320, 0.95, _BC, _I, _A),
    ("seresnet50.a1_in1k", 80.012, 224, 288, 0.95, _BC, _I, _A),
    ("seresnet50.a2_in1k", 80.102, 224, 288, 0.95, _BC, _I, _A),
    ("seresnet50.a3_in1k", 75.104, 160, 224, 0.95, _BC, _I, _A),
    ("seresnet50.ra2_in1k", 80.260, 224, 288, 0.875, _BC, _I, _A),
    ("seresnext50_32x4d.gluon_in1k", 79.916, 224, None, 0.875, _BC, _I, _A),
    ("seresnext50_32x4d.racm_in1k", 81.268, 224, 288, 0.875, _BC, _I, _A),
    ("resnext50d_32x4d.bt_in1k", 79.672, 224, 288, 0.875, _BC, _I, _A),
    ("resnetv2_50.a1h_in1k", 80.410, 224, 288, 0.95, _BC, _N, _A),
    ("resnetv2_101.a1h_in1k", 82.042, 224, 288, 0.95, _BC, _N, _A),
    # timm's second tier: tiered stems, ECA, GroupNorm, anti-aliasing, ResNet-RS.
    ("resnet10t.c3_in1k", 66.724, 176, 224, 0.875, _BC, _I, _A),
    ("resnet14t.c3_in1k", 71.318, 176, 224, 0.875, _BC, _I, _A),
    ("resnet26.bt_in1k", 75.298, 224, 288, 0.875, _BC, _I, _A),
    ("resnet26d.bt_in1k", 76.698, 224, 288, 0.875, _BC, _I, _A),
    ("ecaresnet26t.ra2_in1k", 78.894, 256, 320, 0.875, _BC, _I, _A),
    ("ecaresnet50d.miil_in1k", 80.634, 224, 288, 0.875, _BC, _I, _A),
    ("ecaresnet101d.miil_in1k", 82.180, 224, 288, 0.875, _BC, _I, _A),
    ("resnet50_gn.a1h_in1k", 80.074, 224, 288, 0.94, _BC, _I, _A),
    ("resnetaa50.a1h_in1k", 80.614, 224, 288, 0.95, _BC, _I, _A),
    ("resnetaa50d.sw_in12k_ft_in1k", 81.782, 224, 288, 0.95, _BC, _I, _A),
    ("resnetblur50.bt_in1k", 79.306, 224, 288, 0.875, _BC, _I, _A),
    ("resnetrs50.tf_in1k", 77.858, 160, 224, 0.91, _BC, _I, _A),
    ("resnetrs101.tf_in1k", 80.706, 192, 288, 0.94, _BC, _I, _A),
    ("resnetrs152.tf_in1k", 82.900, 256, 320, 1.0, _BC, _I, _A),
    ("resnetrs200.tf_in1k", 83.884, 256, 320, 1.0, _BC, _I, _A),
    ("resnetrs270.tf_in1k", 83.596, 256, 352, 1.0, _BC, _I, _A),
    ("resnetrs350.tf_in1k", 84.304, 288, 384, 1.0, _BC, _I, _A),
    ("resnetrs420.tf_in1k", 84.240, 320, 416, 1.0, _BC, _I, _A),
]

_KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
# keras.applications' weights: name, md5 of the file with the head (keras' own check),
# top-1. The V1 files are He et al.'s Caffe models (MIT licence); Keras publishes the V2
# files without a licence of their own (keras is Apache-2.0).
_KERAS = [
    ("resnet50.keras_in1k", "2cb95161c43110f7111970584f804107", 74.9),
    ("resnet101.keras_in1k", "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.4),
    ("resnet152.keras_in1k", "100835be76be38e30d865e96f2aaae62", 76.6),
    ("resnet50v2.keras_in1k", "3ef43a0b657b3be2300d5770ece849e0", 76.0),
    ("resnet101v2.keras_in1k", "6343647c601c52e1368623803854d971", 77.2),
    ("resnet152v2.keras_in1k", "a49b44d1979771252814e80f8ec446f9", 78.0),
]

#: The tag that a bare architecture name loads: timm's default for that name.
DEFAULT_TAGS = MappingProxyType({
    "resnet18": "a1_in1k", "resnet34": "a1_in1k", "resnet50": "a1_in1k",
    "resnet101": "a1h_in1k", "resnet152": "a1h_in1k", "resnext50_32x4d": "a1h_in1k",
    "resnext101_32x8d": "tv_in1k", "resnext101_64x4d": "c1_in1k",
    "wide_resnet50_2": "racm_in1k", "wide_resnet101_2": "tv_in1k", "resnet18d": "ra2_in1k",
    "resnet34d": "ra2_in1k", "resnet50d": "ra2_in1k", "resnet101d": "ra2_in1k",
    "resnet152d": "ra2_in1k", "resnet200d": "ra2_in1k", "seresnet50": "a1_in1k",
    "seresnext50_32x4d": "racm_in1k", "resnext50d_32x4d": "bt_in1k",
    "resnetv2_50": "a1h_in1k", "resnetv2_101": "a1h_in1k",
    "resnet10t": "c3_in1k", "resnet14t": "c3_in1k", "resnet26": "bt_in1k",
    "resnet26d": "bt_in1k", "ecaresnet26t": "ra2_in1k", "ecaresnet50d": "miil_in1k",
    "ecaresnet101d": "miil_in1k", "resnet50_gn": "a1h_in1k", "resnetaa50": "a1h_in1k",
    "resnetaa50d": "sw_in12k_ft_in1k", "resnetblur50": "bt_in1k",
    **{f"resnetrs{depth}": "tf_in1k" for depth in (50, 101, 152, 200, 270, 350, 420)},
    "resnet50v2": "keras_in1k", "resnet101v2": "keras_in1k", "resnet152v2": "keras_in1k",
})


def _entries():
    for name, file, top1, resize in _TORCHVISION:
        yield Weights(name, "torchvision", _TV_BASE + file, top1, _TORCHVISION_TOP1, 224,
                      224 / resize, "bilinear", IMAGENET_MEAN, IMAGENET_STD, "bsd-3-clause",
                      file_hash=file.rsplit("-", 1)[1].split(".")[0],
                      hash_kind="sha256-prefix")
    for name, top1, size, test, crop, interpolation, mean, licence in _TIMM:
        std = IMAGENET_STD if mean == IMAGENET_MEAN else INCEPTION
        yield Weights(name, "timm", _HF.format(name), top1, _TIMM_TOP1, size, crop,
                      interpolation, mean, std, licence, test_input_size=test)
    for name, md5, top1 in _KERAS:
        v2 = "v2" in name
        file = f"{name.partition('.')[0]}_weights_tf_dim_ordering_tf_kernels.h5"
        yield Weights(name, "keras.applications", _KERAS_BASE + file, top1, _KERAS_TOP1, 224,
                      None, None, INCEPTION if v2 else CAFFE_MEAN,
                      INCEPTION if v2 else CAFFE_STD,
                      "unstated (keras: apache-2.0)" if v2 else "mit",
                      mode="tf" if v2 else "caffe", file_hash=md5, hash_kind="md5")


#: Every published weight kresnet loads by name: ``{name: Weights}``.
WEIGHTS = MappingProxyType({entry.name: entry for entry in _entries()})


def lookup(name: str, argument: str = "name") -> Weights:
    """The entry of a full name (``"resnet50.tv2_in1k"``) or of a bare architecture name,
    which means its default tag (:data:`DEFAULT_TAGS`).

    >>> lookup("resnet50d").name
    'resnet50d.ra2_in1k'
    """
    if not isinstance(name, str):
        raise TypeError(f"`{argument}` must be a weights name (a string). "
                        f"Received: {argument}={name!r}")
    if name in WEIGHTS:
        return WEIGHTS[name]
    if name in DEFAULT_TAGS:
        return WEIGHTS[f"{name}.{DEFAULT_TAGS[name]}"]
    arch = name.partition(".")[0]
    known = [n for n in WEIGHTS if n.partition(".")[0] == arch]
    hint = (f"the weights of {arch!r} are {', '.join(known)}" if known else
            "see kresnet.WEIGHTS or docs/weights.md for every name")
    raise ValueError(f"`{argument}` must be a weights name of kresnet.WEIGHTS such as "
                     f"'resnet50.tv2_in1k', or an architecture with a default tag; "
                     f"{hint}. Received: {argument}={name!r}")


def for_preset(preset: str, weights: str) -> Weights:
    """The entry that ``kresnet.build(preset, weights=weights)`` loads: ``weights`` is a
    full name or a tag of the weights of ``preset``'s own network.

    >>> for_preset("resnet50_v1_5", "tv2_in1k").name
    'resnet50.tv2_in1k'
    """
    if "." in weights:
        entry = lookup(weights, "weights")
    else:
        found = [e for e in WEIGHTS.values() if e.tag == weights and e.preset == preset
                 and not e.extra_options]
        if not found:
            fits = [e.name for e in WEIGHTS.values() if e.preset == preset and not e.extra_options]
            elsewhere = [f"{e.name!r} is {e.preset!r}'s (kresnet.build({e.preset!r}, "
                         f"weights={weights!r}))" for e in WEIGHTS.values()
                         if e.tag == weights and e.arch == preset and not e.extra_options]
            raise ValueError(
                f"`weights`={weights!r} is not a tag of the weights of {preset!r}"
                + (f"; those are {', '.join(fits)}" if fits else
                   f"; {preset!r} has no published weights")
                + "".join(f"; {text}" for text in elsewhere) + ".")
        entry = found[0]
    if entry.preset != preset or entry.extra_options:
        raise ValueError(
            f"`weights`={weights!r} belongs to {entry.arch!r}, which kresnet builds as "
            f"{entry.preset!r} with {_listed(entry.extra_options) or 'no other options'}, not to "
            f"{preset!r}: use kresnet.pretrained({entry.name!r}).")
    return entry


def _listed(options):
    return ", ".join(f"{k}={v!r}" for k, v in options.items())

"""The one table of standard ResNet depths (He et al. 2015, Table 1).

Everything that needs to know which blocks a depth has (the builder, the tests, the docs)
reads :data:`DEPTHS`; nothing else repeats these numbers.
"""

from dataclasses import dataclass
from types import MappingProxyType

#: Width of the first stage; every later stage doubles it.
BASE_WIDTH = 64
#: Output channels of a bottleneck block per unit of its inner width.
BOTTLENECK_EXPANSION = 4
#: Number of the first residual stage (stage 1 is the stem), as in ``res2a``.
FIRST_STAGE = 2
#: Layers with weights in one block of each kind (for the depth of a custom stage list).
LAYERS_PER_BLOCK = {"basic": 2, "bottleneck": 3}


@dataclass(frozen=True)
class Depth:
    """One row of the table.

    ``params_bias``: parameters with biases on every conv and a 1000-class ``fc1000``
    head at 224x224 (the keras.applications convention).
    ``params_no_bias``: trainable parameters without conv biases (torchvision's published
    counts; batch-norm moving statistics are not trainable and not counted).
    ``None`` where no published count exists.
    """

    depth: int
    block_type: str
    blocks: tuple
    numbered_stages: tuple
    params_bias: int
    params_no_bias: int
    source: str


DEPTHS = MappingProxyType({
    row.depth: row
    for row in (
        Depth(18, "basic", (2, 2, 2, 2), (), 11_703_912, 11_689_512,
              "torchvision resnet18 (no bias); He et al. 2015 Table 1"),
        Depth(34, "basic", (3, 4, 6, 3), (), 21_823_208, 21_797_672,
              "torchvision resnet34 (no bias); He et al. 2015 Table 1"),
        Depth(50, "bottleneck", (3, 4, 6, 3), (), 25_636_712, 25_557_032,
              "keras.applications.ResNet50 (bias); torchvision resnet50 (no bias)"),
        Depth(101, "bottleneck", (3, 4, 23, 3), (3, 4), 44_707_176, 44_549_160,
              "keras.applications.ResNet101 (bias); torchvision resnet101 (no bias)"),
        Depth(152, "bottleneck", (3, 8, 36, 3), (3, 4), 60_419_944, 60_192_808,
              "keras.applications.ResNet152 (bias); torchvision resnet152 (no bias)"),
        Depth(200, "bottleneck", (3, 24, 36, 3), (3, 4), None, 64_673_832,
              "He et al. 2016 (Identity Mappings) section 4.3; no bias: pytorchcv resnet200 "
              "(osmr/imgclsmob tests); with biases: none published"),
    )
})

BLOCK_TYPES = tuple(LAYERS_PER_BLOCK)


def stage_widths(n_stages, base_width=BASE_WIDTH):
    """Default widths: ``base_width`` for the first stage, doubling at every later one.

    >>> stage_widths(4), stage_widths(3, 16)
    ((64, 128, 256, 512), (16, 32, 64))
    """
    return tuple(base_width * 2 ** i for i in range(n_stages))


def block_filters(width, block_type, groups=1, width_per_group=BASE_WIDTH):
    """Filters of the blocks of a stage of ``width``: two for basic, three for bottleneck.

    A bottleneck's middle width is ``width * width_per_group / 64 * groups`` (torchvision's
    rule for ResNeXt and wide ResNets); its output is ``4 * width``.

    >>> block_filters(64, "bottleneck"), block_filters(512, "basic")
    ((64, 64, 256), (512, 512))
    >>> block_filters(64, "bottleneck", groups=32, width_per_group=4)
    (128, 128, 256)
    """
    if block_type == "basic":
        return (width, width)
    middle = int(width * width_per_group / BASE_WIDTH) * groups
    return (middle, middle, width * BOTTLENECK_EXPANSION)


def depth_of(blocks, block_type):
    """Depth of a custom stage list: layers with weights, stem and classifier included.

    >>> depth_of((3, 4, 6, 3), "bottleneck"), depth_of((2, 2, 2, 2), "basic")
    (50, 18)
    """
    return LAYERS_PER_BLOCK[block_type] * sum(blocks) + 2

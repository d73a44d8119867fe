"""The one table of standard ResNet depths (He et al. 2015, Table 1).

Everything that needs to know which blocks a depth has (the builder, the tests, the docs)
reads :data:`DEPTHS`; nothing else repeats these numbers.
"""

from dataclasses import dataclass

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
    ``params_no_bias``: the same without conv biases (torchvision's published counts).
    """

    depth: int
    block_type: str
    blocks: tuple
    numbered_stages: tuple
    params_bias: int
    params_no_bias: int
    source: str


DEPTHS = {
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
    )
}

BLOCK_TYPES = tuple(LAYERS_PER_BLOCK)


def stage_filters(stage, block_type, base_width=BASE_WIDTH):
    """Filters of every block in ``stage`` (2, 3, ...): two for basic, three for bottleneck.

    >>> stage_filters(2, "bottleneck"), stage_filters(5, "basic")
    ((64, 64, 256), (512, 512))
    """
    width = base_width * 2 ** (stage - FIRST_STAGE)
    if block_type == "basic":
        return (width, width)
    return (width, width, width * BOTTLENECK_EXPANSION)


def depth_of(blocks, block_type):
    """Depth of a custom stage list: layers with weights, stem and classifier included.

    >>> depth_of((3, 4, 6, 3), "bottleneck"), depth_of((2, 2, 2, 2), "basic")
    (50, 18)
    """
    return LAYERS_PER_BLOCK[block_type] * sum(blocks) + 2

"""Draw the pictures of docs/: one model per block kind and stem, ResNet-18, ResNet-152 compact.

Usage: ``python scripts/make_figures.py [--out docs/figures]``

Every picture is an SVG drawn with :func:`kresnet.plot_model` (one line per layer: name,
class, output shape) from a small ``keras.Model`` built with kresnet's public functions, so
the layer names in the pictures are the ones the library gives. The pictures show no
weights, so the two full networks are built with zero kernels, which spares drawing
ResNet-152's 60 million random numbers (about 2 of its 5 seconds). SVG files are small text
files that diff well, which is why they are kept in the repository. They show the whole
drawing in any viewer; tests/test_docs.py renders each with librsvg's ``rsvg-convert`` to
check that. Needs Graphviz' ``dot``.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # draw with this checkout's kresnet, whatever is installed
    sys.path.insert(0, ROOT)

import keras  # noqa: E402

import kresnet  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "docs", "figures")


def _block(name, shape, function, *args, **options):
    """A model of the one block ``function`` (conv_block or identity_block) builds on an
    input of ``shape``."""
    x = keras.Input(shape, name="input")
    return keras.Model(x, function(x, *args, **options), name=name)


def _stem(name, shape, stem):
    x = keras.Input(shape, name="input")
    return keras.Model(x, kresnet.do_first_conv(x, stem=stem), name=name)


#: File stem -> function returning the model to draw. Filters are ``(f1, f2)`` for a basic
#: block and ``(f1, f2, f3)`` for a bottleneck; stage 2 keeps the size, stage 3 halves it.
FIGURES = {
    "basic_identity_block": lambda: _block(
        "basic_identity_block", (56, 56, 64), kresnet.identity_block, 3, (64, 64), 2, "b"),
    "basic_conv_block": lambda: _block(
        "basic_conv_block", (56, 56, 64), kresnet.conv_block, 3, (128, 128), 3, "a"),
    "bottleneck_identity_block": lambda: _block(
        "bottleneck_identity_block", (56, 56, 256), kresnet.identity_block, 3,
        (64, 64, 256), 2, "b"),
    "bottleneck_conv_block": lambda: _block(
        "bottleneck_conv_block", (56, 56, 256), kresnet.conv_block, 3, (128, 128, 512), 3,
        "a"),
    "bottleneck_stride_3x3_block": lambda: _block(
        "bottleneck_stride_3x3_block", (56, 56, 256), kresnet.conv_block, 3,
        (128, 128, 512), 3, "a", stride_on="3x3"),
    "preact_block": lambda: _block(
        "preact_block", (56, 56, 256), kresnet.conv_block, 3, (128, 128, 512), 3, "a",
        preact=True, stride_on="3x3"),
    "se_block": lambda: _block(
        "se_block", (56, 56, 256), kresnet.identity_block, 3, (64, 64, 256), 2, "b",
        se_ratio=1 / 16),
    "shortcut_a_block": lambda: _block(
        "shortcut_a_block", (32, 32, 16), kresnet.conv_block, 3, (32, 32), 3, "a",
        shortcut="A"),
    "shortcut_c_block": lambda: _block(
        "shortcut_c_block", (56, 56, 256), kresnet.identity_block, 3, (64, 64, 256), 2, "b",
        shortcut="C"),
    "shortcut_avg_block": lambda: _block(
        "shortcut_avg_block", (56, 56, 256), kresnet.conv_block, 3, (128, 128, 512), 3, "a",
        shortcut="avg", stride_on="3x3"),
    "resnext_block": lambda: _block(
        "resnext_block", (56, 56, 256), kresnet.identity_block, 3, (128, 128, 256), 2, "b",
        groups=32, stride_on="3x3"),
    "drop_path_block": lambda: _block(
        "drop_path_block", (56, 56, 256), kresnet.identity_block, 3, (64, 64, 256), 2, "b",
        drop_path_rate=0.1),
    "blur_block": lambda: _block(
        "blur_block", (56, 56, 256), kresnet.conv_block, 3, (128, 128, 512), 3, "a",
        stride_on="3x3", anti_alias="blur"),
    "eca_block": lambda: _block(
        "eca_block", (56, 56, 256), kresnet.identity_block, 3, (64, 64, 256), 2, "b",
        eca=True),
    "stem_classic": lambda: _stem("stem_classic", (224, 224, 3), "classic"),
    "stem_deep": lambda: _stem("stem_deep", (224, 224, 3), "deep"),
    "stem_cifar": lambda: _stem("stem_cifar", (32, 32, 3), "cifar"),
    "resnet18": lambda: kresnet.create_resnet((224, 224, 3), 1000, 18, head="fc",
                                              kernel_initializer="zeros"),
}
#: Figures drawn with :func:`kresnet.plot_blocks`, one box per block.
COMPACT = {"resnet152_blocks": lambda: kresnet.ResNet152(name="resnet152_blocks",
                                                         kernel_initializer="zeros")}


def make_figures(out=DEFAULT_OUT, names=None):
    """Write ``{out}/{name}.svg`` for each name of :data:`FIGURES` (all by default).

    Returns the paths written.
    """
    paths = []
    for name in names or [*FIGURES, *COMPACT]:
        # Fresh Keras state for each model; no garbage collection (0.2 s a time).
        keras.backend.clear_session(free_memory=False)
        draw = kresnet.plot_blocks if name in COMPACT else kresnet.plot_model
        model = (COMPACT if name in COMPACT else FIGURES)[name]()
        paths.append(draw(model, os.path.join(out, f"{name}.svg")))
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="folder for the SVG files (default: docs/figures)")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"figures to draw (default: all): {', '.join([*FIGURES, *COMPACT])}")
    args = parser.parse_args(argv)
    known = [*FIGURES, *COMPACT]
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    for path in make_figures(args.out, args.names):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

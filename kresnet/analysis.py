"""Counting and describing built models: multiply-accumulates, parameters, stage tables."""

import math
import re

import keras

from kresnet.features import stem_prefix
from kresnet.validation import shape_text


def _spatial(shape, data_format):
    dims = shape[2:4] if data_format == "channels_first" else shape[1:3]
    return dims


def layer_macs(layer):
    """Multiply-accumulates of one layer for one image: convolutions (grouped ones too) and
    Dense layers; 0 for everything else."""
    if isinstance(layer, keras.layers.Conv2D):
        data_format = layer.data_format
        out = layer.output.shape
        height, width = _spatial(out, data_format)
        if height is None or width is None:
            raise ValueError(f"Layer {layer.name!r} has an unknown output size {tuple(out)}: "
                             "count_macs needs a model built with a fixed input size.")
        in_channels = layer.input.shape[1 if data_format == "channels_first" else -1]
        kh, kw = layer.kernel_size
        return height * width * layer.filters * kh * kw * (in_channels // layer.groups)
    if isinstance(layer, keras.layers.Dense):
        return math.prod(layer.input.shape[1:]) * layer.units
    return 0


def count_macs(model):
    """Exact multiply-accumulates per image of a built model with a fixed input size.

    Counted: every Conv2D (``H_out * W_out * C_out * k_h * k_w * C_in / groups``) and every
    Dense layer (``inputs * units``). Not counted: biases, batch normalisation, activations,
    additions, pooling, padding and the squeeze-and-excitation multiply, which together are
    well under 1% for the standard ResNets. This is what He et al. (2015, Table 1) call
    FLOPs and what torchvision publishes as GFLOPS.

    >>> import kresnet
    >>> count_macs(kresnet.ResNet50())
    3857973248
    """
    return sum(layer_macs(layer) for layer in model.layers)


_STAGE = re.compile(r"^(?:res|bn)(\d+)")
_STEM = re.compile(r"^(?:conv1|bn_conv1|pool1)")


def _prefix(model):
    return stem_prefix(model) or ""


def _group(name):
    """``stem``, ``res2`` ..., ``post`` (pre-activation nets' last BN and ReLU) or ``head``
    for a layer name without its prefix."""
    if name == "input":
        return "input"
    if name in ("bn_post", "post_relu"):
        return "post"
    if _STEM.match(name):
        return "stem"
    match = _STAGE.match(name)
    return f"res{match.group(1)}" if match else "head"


class Description(list):
    """Rows of :func:`describe` (a list of dicts) that print as a table."""

    COLUMNS = (("stage", "stage"), ("layers", "layers"), ("output", "output"),
               ("blocks", "blocks"), ("params", "params"), ("macs", "MACs"))

    def __str__(self):
        def cell(row, key):
            value = row[key]
            if key == "output":
                return shape_text(value)
            return f"{value:,}" if isinstance(value, int) else str(value)

        rows = [[title for _, title in self.COLUMNS]]
        rows += [[cell(row, key) for key, _ in self.COLUMNS] for row in self]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.COLUMNS))]
        lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
        return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def describe(model):
    """A table of the model per stage, like Table 1 of He et al. (2015).

    One row each for the stem, every stage (``res2`` ...) and the head: the first and last
    layer names, the output shape, the number of blocks, parameters and multiply-accumulates
    (MACs need a fixed input size; otherwise they are None). ``print()`` gives a text table;
    the rows are dicts.

    >>> import kresnet
    >>> rows = describe(kresnet.ResNet50())
    >>> [(r["stage"], r["blocks"], r["output"]) for r in rows][1:3]
    [('res2', 3, (56, 56, 256)), ('res3', 4, (28, 28, 512))]
    """
    prefix = _prefix(model)
    rows = {}
    for layer in model.layers:
        name = layer.name[len(prefix):] if layer.name.startswith(prefix) else layer.name
        group = _group(name)
        if group == "input":
            continue
        row = rows.setdefault(group, {"stage": group, "first": layer.name, "blocks": 0,
                                      "params": 0, "macs": 0})
        row["last"] = layer.name
        row["output"] = tuple(layer.output.shape[1:])
        row["params"] += layer.count_params()
        if row["macs"] is not None:
            try:
                row["macs"] += layer_macs(layer)
            except ValueError:
                row["macs"] = None
        if isinstance(layer, keras.layers.Add) and group.startswith("res"):
            row["blocks"] += 1
    for row in rows.values():
        row["layers"] = f"{row['first']} .. {row['last']}"
    return Description(rows.values())


_BLOCK = re.compile(r"^(?:res|bn)(\d+[a-z]\d*)(?:_|$)")


def blocks(model):
    """Per residual block, in order: name, kind, shortcut, output shape and parameters.

    ``kind`` is ``"basic"`` or ``"bottleneck"`` with ``"pre-activation"``, ``"grouped"`` and
    ``"SE"`` added where they apply; ``shortcut`` is ``"identity"``, ``"projection"``,
    ``"avg-pool + projection"``, ``"subsample"`` or ``"subsample + zeros"``.

    >>> import kresnet
    >>> first = blocks(kresnet.create_resnet((64, 64, 3), 10, 18))[0]
    >>> first["name"], first["kind"], first["shortcut"], first["output"]
    ('res2a', 'basic', 'identity', (16, 16, 64))
    """
    prefix = _prefix(model)
    found = {}
    for layer in model.layers:
        name = layer.name[len(prefix):] if layer.name.startswith(prefix) else layer.name
        match = _BLOCK.match(name)
        if match:
            found.setdefault(f"res{match.group(1)}", []).append((name, layer))
    rows = []
    for base, members in found.items():
        # "res2a_branch2b" -> "_branch2b"; "bn2a_branch2b" -> "bn_branch2b".
        roles = {(name[len(base):] if name.startswith("res") else
                  "bn" + name[len(base) - 1:]): layer for name, layer in members}
        kind = ["bottleneck" if "_branch2c" in roles else "basic"]
        if "bn_preact" in roles:
            kind.insert(0, "pre-activation")
        middle = roles.get("_branch2b")
        if middle is not None and getattr(middle, "groups", 1) > 1:
            kind.append(f"grouped x{middle.groups}")
        if "_se_scale" in roles:
            kind.append("SE")
        pool = roles.get("_branch1_pool")
        if "_branch1" in roles:
            shortcut = "avg-pool + projection" if isinstance(
                pool, keras.layers.AveragePooling2D) else "projection"
        elif "_branch1_zeros" in roles:
            shortcut = "subsample + zeros" if pool is not None else "zeros"
        else:
            shortcut = "subsample" if pool is not None else "identity"
        out = roles.get("_relu", roles.get(""))
        rows.append({"name": prefix + base, "kind": " ".join(kind), "shortcut": shortcut,
                     "output": tuple(out.output.shape[1:]),
                     "params": sum(layer.count_params() for _, layer in members)})
    return rows

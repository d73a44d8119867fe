"""Counting and describing built models: multiply-accumulates, parameters, stage tables."""

import math

import keras

from kresnet import inspection, naming, validation
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


def count_macs(model: keras.Model) -> int:
    """Exact multiply-accumulates per image of a built model with a fixed input size.

    Counted: every Conv2D (``H_out * W_out * C_out * k_h * k_w * C_in / groups``) and every
    Dense layer (``inputs * units``). Not counted: biases, batch normalisation, activations,
    additions, pooling, padding and the squeeze-and-excitation multiply, which together are
    well under 1% for the standard ResNets. This is what He et al. (2015, Table 1) call
    FLOPs and what torchvision publishes as GFLOPS.

    >>> import kresnet
    >>> count_macs(kresnet.ResNet18())
    1814073344
    """
    return sum(layer_macs(layer) for layer in validation.keras_model(model).layers)


def _groups(model):
    """``{layer name: (prefix, group)}``: the group is ``stem``, ``res2`` ..., ``post``
    (pre-activation nets' last BN and ReLU) or ``head``; other layers (those of a model
    around the ResNets) count to the last head. Input layers have no group."""
    prefixes = naming.prefixes(layer.name for layer in model.layers) or [""]
    groups = {}
    for layer in model.layers:
        name = next((n for n in (naming.parse(layer.name, p) for p in prefixes)
                     if n is not None), None)
        if isinstance(layer, keras.layers.InputLayer) or (name is not None and
                                                          name.part == "input"):
            continue
        if name is None:
            groups[layer.name] = (prefixes[-1], "head", None)
        elif name.part == "block":
            groups[layer.name] = (name.prefix, naming.stage_name(name.stage), name)
        else:
            groups[layer.name] = (name.prefix, name.part, name)
    return groups, len(prefixes) > 1


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


def describe(model: keras.Model) -> "Description":
    """A table of the model per stage, like Table 1 of He et al. (2015).

    One row each for the stem, every stage (``res2`` ...) and the head: the first and last
    layer names, the output shape, the number of blocks, parameters and multiply-accumulates
    (MACs need a fixed input size; otherwise they are None). ``print()`` gives a text table;
    the rows are dicts.

    >>> import kresnet
    >>> rows = describe(kresnet.ResNet18())
    >>> [(r["stage"], r["blocks"], r["output"]) for r in rows][1:3]
    [('res2', 2, (56, 56, 64)), ('res3', 2, (28, 28, 128))]
    """
    groups, several = _groups(validation.keras_model(model))
    rows = {}
    for layer in model.layers:
        if layer.name not in groups:
            continue
        prefix, group, name = groups[layer.name]
        group = f"{prefix}{group}" if several else group
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
        if isinstance(layer, keras.layers.Add) and name is not None and name.role == "sum":
            row["blocks"] += 1
    for row in rows.values():
        row["layers"] = f"{row['first']} .. {row['last']}"
    return Description(rows.values())


def blocks(model: keras.Model) -> list:
    """Per residual block, in order: name, kind, shortcut, output shape and parameters.

    ``kind`` is ``"basic"`` or ``"bottleneck"`` with ``"pre-activation"``, ``"grouped"`` and
    ``"SE"`` added where they apply; ``shortcut`` is ``"identity"``, ``"projection"``,
    ``"avg-pool + projection"``, ``"subsample"`` or ``"subsample + zeros"``. Every ResNet
    of the model is listed, whatever its ``name_prefix``.

    >>> import kresnet
    >>> first = blocks(kresnet.create_resnet((64, 64, 3), 10, 18))[0]
    >>> first["name"], first["kind"], first["shortcut"], first["output"]
    ('res2a', 'basic', 'identity', (16, 16, 64))
    """
    found = {}
    for prefix in naming.prefixes(layer.name for layer in model.layers):
        for layer, name in inspection.parsed(model, prefix):
            if name.part == "block":
                found.setdefault(prefix + name.base, {})[(name.role, name.branch)] = layer
    rows = []
    for base, roles in found.items():
        kind = ["bottleneck" if ("conv", "2c") in roles else "basic"]
        if ("preact_bn", None) in roles:
            kind.insert(0, "pre-activation")
        middle = roles.get(("conv", "2b"))
        if middle is not None and getattr(middle, "groups", 1) > 1:
            kind.append(f"grouped x{middle.groups}")
        if ("se_scale", None) in roles:
            kind.append("SE")
        pool = roles.get(("pool", "1"))
        if ("conv", "1") in roles:
            shortcut = "avg-pool + projection" if isinstance(
                pool, keras.layers.AveragePooling2D) else "projection"
        elif ("zeros", "1") in roles:
            shortcut = "subsample + zeros" if pool is not None else "zeros"
        else:
            shortcut = "subsample" if pool is not None else "identity"
        out = roles.get(("out", None), roles.get(("sum", None)))
        rows.append({"name": base, "kind": " ".join(kind), "shortcut": shortcut,
                     "output": tuple(out.output.shape[1:]),
                     "params": sum(layer.count_params() for layer in roles.values())})
    return rows

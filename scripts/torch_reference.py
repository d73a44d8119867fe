"""The torch side of tests/test_pytorch.py: torchvision's and timm's own ResNets, run in
the venv that has them (scripts/setup-torch-reference.sh makes .venv-torch), never kresnet.

Usage:
    python scripts/torch_reference.py make OUT SPEC.json
    python scripts/torch_reference.py back OUT SPEC.json
    python scripts/torch_reference.py registry OUT NAMES.json

SPEC.json: {"archs": {ARCH: {"library": "torchvision" or "timm", "sizes": [[H, W], ...],
"format": "pth" or "safetensors", "channels": [C, ...] (timm only, optional)}}}.
``make`` builds each model (no pretrained weights),
gives its batch norms random statistics, scales and shifts (seed 0), saves its state_dict to
OUT/ARCH.pth (``torch.save``) or OUT/ARCH.safetensors (as timm publishes weights), and for
each size writes the input OUT/ARCH.HxW.x.npy (NHWC), the eval-mode logits
OUT/ARCH.HxW.logits.npy and, for timm, ``forward_features`` OUT/ARCH.HxW.features.npy (NHWC).
For each C of ``channels``, timm's model with ``in_chans=C`` takes the saved weights, its
first conv adapted by timm's own ``adapt_input_conv`` (as timm loads pretrained weights for
other channel counts), and writes its logits on a C-channel input at the first size:
OUT/ARCH.cC.x.npy and OUT/ARCH.cC.logits.npy.
``back`` loads OUT/ARCH.back.npz (kresnet.to_torch's arrays) into a new model of the same
architecture with ``strict=True`` and writes its logits on the same inputs,
OUT/ARCH.HxW.back.npy.
``registry`` writes OUT/registry.json: for each weights name of NAMES.json (a list), what
timm's own ``pretrained_cfg`` says of it (address, sizes, crop, interpolation, mean, std,
licence, classes) and, for torchvision's weights, what torchvision's own ``Weights`` enum
says (address, acc@1, resize and crop), for tests/test_registry.py to compare.
"""

import json
import os
import sys

import numpy as np
import torch


def make_model(arch, library):
    if library == "torchvision":
        import torchvision  # noqa: PLC0415

        return getattr(torchvision.models, arch)(weights=None).eval()
    import timm  # noqa: PLC0415

    return timm.create_model(arch, pretrained=False).eval()


def empty_model(arch, library):
    """The model with its tensors on the meta device (shapes, no values, no initialisation
    drawn), for a state_dict that gives every value (``load_state_dict(assign=True)``)."""
    with torch.device("meta"):
        return make_model(arch, library)


def randomise(model, seed=0):
    """Random BN statistics, scales and shifts: with fresh ones every BN is near the identity
    (and timm zeroes the last BN of each block). Scales below 1 keep a deep random net out
    of the chaotic regime, where float32 rounding alone grows block by block (with scales
    around 1, kresnet's and timm's seresnet101 drifted apart by a factor of about two a
    block through its 23-block stage 4, and ended 5% apart)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                n = module.num_channels
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.3)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.3)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)


def run(model, out, arch, size, suffix, features):
    height, width = size
    stem = os.path.join(out, f"{arch}.{height}x{width}")
    x = np.load(f"{stem}.x.npy") if os.path.exists(f"{stem}.x.npy") else None
    if x is None:
        x = np.random.default_rng(height * 1000 + width).uniform(
            -1, 1, (2, height, width, 3)).astype("float32")
        np.save(f"{stem}.x.npy", x)
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        np.save(f"{stem}.{suffix}.npy", model(inputs).numpy())
        if features:
            np.save(f"{stem}.features.npy",
                    model.forward_features(inputs).numpy().transpose(0, 2, 3, 1))


def registry(out, names):
    import timm  # noqa: PLC0415
    import torchvision  # noqa: PLC0415

    torchvision_weights = {}
    for enum in vars(torchvision.models).values():
        if isinstance(enum, type) and issubclass(enum, torchvision.models.WeightsEnum):
            for weights in enum:
                transforms = weights.transforms()
                torchvision_weights[weights.url] = {
                    "acc1": weights.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                    "resize": transforms.resize_size[0], "crop": transforms.crop_size[0],
                    "interpolation": transforms.interpolation.value,
                    "mean": list(transforms.mean), "std": list(transforms.std)}
    facts = {}
    for name in names:
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        facts[name] = {"timm": {key: cfg.get(key) for key in (
            "hf_hub_id", "url", "input_size", "test_input_size", "crop_pct", "interpolation",
            "mean", "std", "license", "num_classes")},
            "torchvision": torchvision_weights.get(cfg.get("url"))}
    with open(os.path.join(out, "registry.json"), "w", encoding="utf-8") as file:
        json.dump(facts, file)


def counts(out, names):
    """timm's own parameter count and training size of each model, built on torch's meta
    device (shapes without values, so ResNet-RS-420 takes no time)."""
    import timm  # noqa: PLC0415

    facts = {}
    for name in names:
        with torch.device("meta"):
            model = timm.create_model(name, pretrained=False)
        facts[name] = {"params": sum(p.numel() for p in model.parameters()),
                       "input_size": list(model.pretrained_cfg["input_size"])}
    with open(os.path.join(out, "counts.json"), "w", encoding="utf-8") as file:
        json.dump(facts, file)


def main(command, out, spec_path):
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    if command in ("registry", "counts"):
        (registry if command == "registry" else counts)(out, spec)
        return
    torch.manual_seed(0)
    for arch, entry in spec["archs"].items():
        if command == "make":
            model = make_model(arch, entry["library"])
            randomise(model)
            state = model.state_dict()
            if entry["format"] == "safetensors":
                from safetensors.torch import save_file  # noqa: PLC0415

                save_file({k: v.contiguous() for k, v in state.items()},
                          os.path.join(out, f"{arch}.safetensors"))
            else:
                torch.save(state, os.path.join(out, f"{arch}.pth"))
        else:
            arrays = np.load(os.path.join(out, f"{arch}.back.npz"))
            state = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
            model = empty_model(arch, entry["library"])
            model.load_state_dict(state, strict=True, assign=True)
            if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
                # Buffers outside the state_dict (the blur's filter) need a real build.
                model = make_model(arch, entry["library"])
                model.load_state_dict(state, strict=True)
        for size in entry["sizes"]:
            run(model, out, arch, size, "logits" if command == "make" else "back",
                features=command == "make" and entry["library"] == "timm")
        if command == "make":
            for channels in entry.get("channels", []):
                adapted(arch, state, channels, entry["sizes"][0], out)


def adapted(arch, state, channels, size, out):
    """timm's ``arch`` with ``in_chans=channels`` on ``state``'s RGB weights."""
    import timm  # noqa: PLC0415
    from timm.models import adapt_input_conv  # noqa: PLC0415

    model = timm.create_model(arch, pretrained=False, in_chans=channels).eval()
    key = model.pretrained_cfg["first_conv"] + ".weight"
    state = dict(state, **{key: adapt_input_conv(channels, state[key])})
    model.load_state_dict(state, strict=True)
    x = np.random.default_rng(channels).uniform(-1, 1, (2, *size, channels)).astype("float32")
    np.save(os.path.join(out, f"{arch}.c{channels}.x.npy"), x)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    np.save(os.path.join(out, f"{arch}.c{channels}.logits.npy"), logits.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:])

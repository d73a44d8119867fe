"""The ``kresnet`` command: summaries, Table 1, pictures, operation counts, export (optimized
for inference in float32, bfloat16 or int8 with ``--precision``), training,
and ``inspect`` (is a model file safe to load?).

Run ``kresnet --help`` (or ``python -m kresnet --help``). Bad arguments exit with status 2
and a one-line message.
"""

import argparse
import os
import sys

PROGRAM = "kresnet"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _shape(text):
    try:
        parts = tuple(None if p in ("", "None", "none", "?") else int(p)
                      for p in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a shape: {text!r} (write H,W,C such as 224,224,3)") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (write H,W,C such as 224,224,3)")
    return parts


#: The commands that read only a model's structure (summary, table, plot, flops) build a
#: preset with zero kernels: its random draws are about half of a ResNet-50's build time and
#: none of those commands shows a weight. ``export`` keeps the preset's own initializer.
STRUCTURE_ONLY = {"kernel_initializer": "zeros"}


def _model(args, structure_only=True):
    import kresnet  # noqa: PLC0415

    source = args.model
    if source.endswith(".keras"):
        return kresnet.load(source)  # checked: refuses files that would run code
    if source not in kresnet.PRESETS:
        raise ValueError(f"unknown preset {source!r}; one of: {', '.join(kresnet.PRESETS)}")
    options = {}
    if getattr(args, "input_shape", None):
        options["input_shape"] = args.input_shape
    if getattr(args, "classes", None):
        options["classes"] = args.classes
    if structure_only:
        options.update(STRUCTURE_ONLY)
    return kresnet.build(source, **options)


def _check_file(args):
    """A ``.keras`` model that is not there: refused before TensorFlow is imported."""
    source = getattr(args, "model", None)
    if source is not None and source.endswith(".keras") and not os.path.isfile(source):
        raise ValueError(f"no file at {source!r}")


def _summary(args):
    import kresnet  # noqa: PLC0415

    model = _model(args)
    model.summary(line_length=110)
    print(kresnet.describe(model))


def _table(args):
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    import kresnet  # noqa: PLC0415

    print(f"{'model':10} {'block':10} {'blocks':14} {'params':>12} {'GMACs':>7}  res5 output")
    for depth in args.depths:
        model = kresnet.build(f"resnet{depth}", **STRUCTURE_ONLY)
        row = kresnet.DEPTHS[depth]
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        res5 = next(r for r in kresnet.describe(model) if r["stage"] == "res5")
        print(f"{'resnet' + str(depth):10} {row.block_type:10} {str(list(row.blocks)):14} "
              f"{trainable:>12,} {kresnet.count_macs(model) / 1e9:>7.2f}  "
              f"{'x'.join(str(d) for d in res5['output'])}")
        keras.backend.clear_session()


def _plot(args):
    import kresnet  # noqa: PLC0415

    model = _model(args)
    draw = kresnet.plot_blocks if args.compact else kresnet.plot_model
    print(draw(model, args.output))


def _flops(args):
    import kresnet  # noqa: PLC0415

    model = _model(args)
    macs = kresnet.count_macs(model)
    print(f"{model.name}: {macs:,} multiply-accumulates per image ({macs / 1e9:.2f} GMACs), "
          f"{model.count_params():,} parameters, input {model.input_shape[1:]}")


def _export_format(args):
    """``--format``, or the output's ending: ``.keras`` writes a Keras file, else ONNX."""
    if args.format is not None:
        return args.format
    return "keras" if args.output.endswith(".keras") else "onnx"


def _check_export(args):
    """The combinations ``kresnet export`` refuses, before TensorFlow is imported."""
    if args.command != "export":
        return
    format, precision = _export_format(args), args.precision
    if precision != "int8" and (args.calibration or args.calibration_method):
        raise ValueError("--calibration and --calibration-method go with --precision int8")
    if precision == "int8":
        if format != "onnx":
            raise ValueError(f"--precision int8 writes an ONNX file (onnxruntime runs it); "
                             f"got --format {format}")
        if not args.calibration:
            raise ValueError("--precision int8 needs --calibration FILE.npy: a few hundred "
                             "images (N,H,W,C) in the model's input form")
        if not os.path.isfile(args.calibration):
            raise ValueError(f"no file at {args.calibration!r} (--calibration)")
        if not args.output.endswith(".onnx"):
            raise ValueError(f"--precision int8 writes an .onnx file; got -o {args.output!r}")
    if precision == "bfloat16" and format == "onnx":
        raise ValueError("--precision bfloat16 runs in TensorFlow: write a .keras file or use "
                         "--format savedmodel (onnxruntime has no bfloat16 convolutions on "
                         "CPUs)")
    if format == "keras" and not args.output.endswith(".keras"):
        raise ValueError(f"--format keras writes a .keras file; got -o {args.output!r}")


def _export(args):
    import kresnet  # noqa: PLC0415

    model = _model(args, structure_only=False)
    format = _export_format(args)
    if args.precision is None:
        written = kresnet.save(model, args.output) if format == "keras" else \
            kresnet.export(model, args.output, format=format)
        print(written)
        return
    options = {}
    if args.precision == "int8":
        import numpy as np  # noqa: PLC0415

        options["calibration"] = np.load(args.calibration, allow_pickle=False)
        if args.calibration_method:
            options["method"] = args.calibration_method
    fast = kresnet.optimize(model, args.precision, **options)
    if format == "keras" or args.precision == "int8":
        print(fast.export(args.output))
    else:
        print(kresnet.export(fast.model, args.output, format=format))


def _inspect(args):
    """Print what a model file holds and whether it is safe; the status is the verdict's."""
    import json  # noqa: PLC0415

    from kresnet import safety  # noqa: PLC0415

    report = safety.inspect(args.file)
    if args.json:
        print(json.dumps({**vars(report), "exit_code": report.exit_code}, indent=1))
    else:
        print(report)
    return report.exit_code


def _train(arguments):
    """Run ``kresnet.training`` (the ``train`` extra) in this process."""
    from kresnet.training import main as train_main  # noqa: PLC0415

    return train_main(arguments, prog=f"{PROGRAM} train")


def parser():
    """The argument parser of the ``kresnet`` command.

    >>> parser().parse_args(["flops", "resnet50", "--input-shape", "64,64,3"]).input_shape
    (64, 64, 3)
    """
    main = _Parser(prog=PROGRAM, description="ResNets with Caffe-style layer names.")
    commands = main.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name, function, help_text, model=True):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(function=function)
        if model:
            sub.add_argument("model", help="a preset name (see `kresnet summary --help`) "
                             "or a .keras file")
            sub.add_argument("--input-shape", type=_shape, help="H,W,C, e.g. 224,224,3")
            sub.add_argument("--classes", type=int, help="classes of the head")
        return sub

    command("summary", _summary, "print a model's layers and its per-stage table")
    table = command("table", _table, "Table 1 of He et al. (2015), from built models",
                    model=False)
    table.add_argument("--depths", type=int, nargs="+", default=[18, 34, 50, 101, 152],
                       choices=[18, 34, 50, 101, 152, 200])
    plot = command("plot", _plot, "draw a model (full graph, or --compact block diagram)")
    plot.add_argument("-o", "--output", required=True, help="picture: .png, .svg, .pdf, .dot")
    plot.add_argument("--compact", action="store_true", help="one node per block")
    command("flops", _flops, "count multiply-accumulates per image")
    export = command("export", _export, "export a model for inference (ONNX or SavedModel)")
    export.add_argument("-o", "--output", required=True, help="file or folder to write")
    export.add_argument("--format", choices=["onnx", "savedmodel", "keras"],
                        help="default: keras when -o ends in .keras, else onnx")
    export.add_argument("--precision", choices=["float32", "bfloat16", "int8"],
                        help="optimize for inference first (kresnet.optimize): float32 folds "
                        "the batch norms, bfloat16 runs in bfloat16 (.keras or savedmodel), "
                        "int8 quantizes to an ONNX file; default: the model as it is")
    export.add_argument("--calibration", metavar="FILE.npy",
                        help="int8: images (N,H,W,C) in the model's input form, to calibrate")
    export.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy"],
                        help="int8: how activation ranges are chosen (default: percentile)")
    inspect = command("inspect", _inspect, "report what a .keras file holds and whether it "
                      "is safe to load, without building it (exit 0 safe, 1 unsafe, 2 not a "
                      "model)", model=False)
    inspect.add_argument("file", help="the .keras file")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    train = commands.add_parser(
        "train", add_help=False, help="train on digits, CIFAR-10 or an image folder "
        "(`kresnet train --help` lists its options)")
    train.add_argument("arguments", nargs=argparse.REMAINDER)  # for the listing; see main
    return main


def _import_quietly():
    """Import Keras (and so TensorFlow) with file descriptor 2 closed: TensorFlow's C++
    start-up lines would bury the command's own output and one-line errors."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kresnet.training.startup import prefer_onednn  # noqa: PLC0415 (imports no TensorFlow)

    prefer_onednn()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import kresnet.presets  # noqa: F401, PLC0415 (imports Keras and TensorFlow)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None):
    """Entry point of the ``kresnet`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # every argument, --help included, is kresnet.training's
        return _train(argv[1:])
    args = parser().parse_args(argv)
    try:
        _check_file(args)
        _check_export(args)
        _import_quietly()
        status = args.function(args)
    except (ValueError, TypeError, RuntimeError, OSError, ImportError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"{PROGRAM} {args.command}: error: {message}", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0

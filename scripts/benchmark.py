"""kresnet against keras.applications on the same configuration, in one process.

    python scripts/benchmark.py                      # ResNet50 and ResNet152, 224x224, 5 repeats
    python scripts/benchmark.py --depths 50 --repeats 7 --json results.json
    python scripts/benchmark.py --quick --json out.json   # CI smoke test: tiny and fast
    python scripts/benchmark.py --inference --figure paths.png  # kresnet.optimize's paths

Both sides are built with their defaults (``include_top=True``, 1000 classes, no weights):
``keras.applications.ResNet{50,152}`` and ``kresnet.ResNet{50,152}``. Every figure is the
median of ``--repeats`` measurements taken after ``--warmup`` unmeasured ones, the sides
alternating within each repeat (A B A B ...) so that a load change on the machine hits both.
Inference runs the model's forward pass (``training=False``) in a ``tf.function`` (with
``jit_compile=True`` for the XLA rows; with ``--quick`` traced once for both batch sizes)
on one constant input batch; "folded" is
:func:`kresnet.fold_batchnorm` of the kresnet model; onnxruntime runs the files that
:func:`kresnet.export` writes, of keras.applications' model and of kresnet's folded
one, each built and exported in a fresh process first (skipped, with a note, when onnx,
tf2onnx or onnxruntime are missing or the export fails), with its threads not spinning.
Peak memory is the peak resident set size (``VmHWM`` of /proc/self/status; ``ru_maxrss``
where there is no /proc) of a fresh Python process that imports TensorFlow, builds the
model and runs one forward pass at the large batch size (with ``--quick``, where
/proc/self/clear_refs can reset the peak, of this process instead, so the figures include
all it already holds). ``--quick`` also measures the models of its last build repeat
instead of building them again. The ratio is always kresnet /
keras.applications in the row's unit: below 1 is better for seconds, megabytes and the
file size, above 1 for images per second.

Prints one Markdown table per depth and writes everything, samples included, to ``--json``.
"""

import argparse
import datetime
import functools
import gc
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIDES = ("keras.applications", "kresnet")
ONNX_PACKAGES = ("onnx", "tf2onnx", "onnxruntime")
#: Row key -> (label, unit, better, target). ``{b}`` is the batch size; the targets are issue
#: #7's, build and load issue #17's.
ROWS = {
    "build": ("build time", "s", "lower", "<= 1.0"),
    "build_uniform": ("build time, kresnet with kernel_initializer='he_uniform'", "s", "lower",
                      None),
    "tf_small": ("inference, batch {b}, TF", "img/s", "higher", ">= 0.97"),
    "tf_large": ("inference, batch {b}, TF", "img/s", "higher", ">= 0.97"),
    "folded_small": ("inference, batch {b}, TF; kresnet folded", "img/s", "higher", ">= 1.15"),
    "folded_large": ("inference, batch {b}, TF; kresnet folded", "img/s", "higher", ">= 1.15"),
    "xla_small": ("inference, batch {b}, TF + XLA; kresnet folded", "img/s", "higher", None),
    "xla_large": ("inference, batch {b}, TF + XLA; kresnet folded", "img/s", "higher", None),
    "ort_small": ("inference, batch {b}, onnxruntime; kresnet folded", "img/s", "higher", None),
    "ort_large": ("inference, batch {b}, onnxruntime; kresnet folded", "img/s", "higher", None),
    "ort_vs_tf": (("inference, batch {b}: kresnet folded in onnxruntime vs "
                   "keras.applications in TF"), "img/s", "higher", ">= 1.4"),
    "train": ("training step, batch {b} (SGD)", "s", "lower", None),
    "save": ("save time (.keras)", "s", "lower", None),
    "load": ("load time (.keras): kresnet.load vs keras.saving.load_model", "s", "lower",
             "<= 1.0"),
    "load_keras": ("load time (.keras), both with keras.saving.load_model", "s", "lower", None),
    "size": ("file size (.keras)", "MB", "lower", None),
    "memory": ("peak memory (build + one batch-{b} forward pass)", "MB", "lower", None),
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke test: ResNet50 at 32x32, batches 1 and 4, one repeat, "
                             "no pauses, one trace per runner, no onnxruntime unless --onnx on, "
                             "peak memory in this process")
    parser.add_argument("--inference", action="store_true",
                        help="issue #17's table instead: kresnet.optimize float32, bfloat16 "
                             "and int8 against keras.applications fp32, batches 1, 8, 32, "
                             "depths 18 50 152 (18 at 32x32, batches 1 and 4 with --quick), "
                             "with the matmul peaks")
    parser.add_argument("--figure", help="--inference: save the throughput figure (PNG) here")
    parser.add_argument("--depths", type=int, nargs="+", choices=(18, 50, 101, 152),
                        help="default: 50 152 (50 with --quick); 18 with --inference only")
    parser.add_argument("--size", type=int, help="input height and width (224; 32 quick)")
    parser.add_argument("--repeats", type=int, help="measured repeats (5; 1 quick)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured repeats first")
    parser.add_argument("--memory-repeats", type=int,
                        help="fresh processes per side for peak memory (2; 1 quick)")
    parser.add_argument("--onnx", choices=("auto", "on", "off"), default="auto",
                        help="onnxruntime rows: auto = on unless --quick")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child-memory", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-export", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--child-int8", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    if args.depths and 18 in args.depths and not args.inference:
        parser.error("--depths 18 goes with --inference (keras.applications has no ResNet18)")
    if args.figure and not args.inference:
        parser.error("--figure goes with --inference")
    if not args.inference:
        args.depths = args.depths or ([50] if quick else [50, 152])
    args.size = args.size or (32 if quick else 224)
    args.repeats = args.repeats or (1 if quick else 5)
    args.memory_repeats = args.memory_repeats or (1 if quick else 2)
    args.batches = (1, 4) if quick else (1, 32)
    args.train_batch = 2 if quick else 16
    args.calls = {args.batches[0]: 1 if quick else 8, args.batches[1]: 1}
    args.pause = 0.0 if quick else 0.2  # seconds before each measurement (see alternate)
    if args.repeats < 1 or args.warmup < 0 or args.size < 32:
        parser.error("--repeats must be >= 1, --warmup >= 0 and --size >= 32")
    return args


# ----------------------------------------------------------------------------- helpers


def build(side, depth, size, **options):
    import keras

    if side == "kresnet":
        import kresnet

        return getattr(kresnet, f"ResNet{depth}")(input_shape=(size, size, 3), **options)
    return getattr(keras.applications, f"ResNet{depth}")(weights=None,
                                                         input_shape=(size, size, 3))


def fresh():
    import keras

    keras.backend.clear_session()
    gc.collect()


def alternate(tasks, repeats, warmup, prepare=None, pause=0.2):
    """Run each task of ``{name: fn}`` in turn, ``warmup + repeats`` times; ``fn()`` returns
    the value measured (seconds, unless it returns its own number). Returns the samples.
    ``pause`` seconds before each task let the previous one's spinning threads settle."""
    samples = {name: [] for name in tasks}
    for round_ in range(warmup + repeats):
        for name, task in tasks.items():
            if prepare:
                prepare()
            time.sleep(pause)
            value = task()
            if round_ >= warmup:
                samples[name].append(value)
    return samples


def timed(fn):
    def run():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def tf_runner(model, jit, any_batch=False):
    """``model``'s forward pass in a ``tf.function``; ``any_batch``: traced once for every
    batch size (XLA still compiles once per shape), else once per input shape. The warm-up
    repeats absorb the tracing and compiling."""
    import tensorflow as tf

    spec = [tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)] \
        if any_batch else None
    forward = tf.function(lambda x: model(x, training=False), jit_compile=jit,
                          input_signature=spec)
    return lambda x: forward(x).numpy()


def throughput(run, x, batch, calls):
    def measure():
        start = time.perf_counter()
        for _ in range(calls):
            run(x)
        return batch * calls / (time.perf_counter() - start)
    return measure


def onnx_missing():
    missing = [p for p in ONNX_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        return (f"onnxruntime rows skipped: {', '.join(missing)} not installed "
                "(pip install kresnet[export])")
    import kresnet

    try:
        kresnet.export  # noqa: B018 (the public name, whatever module defines it)
    except (AttributeError, ImportError) as error:
        return f"onnxruntime rows skipped: kresnet.export is not available ({error})"
    return None


def child(*arguments):
    """Run this script in a fresh process with ``arguments``; its last stdout line, as JSON."""
    command = [sys.executable, os.path.abspath(__file__), *arguments]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        last = lines[-1][:300] if lines else "no message"
        killed = " (killed: out of memory?)" if result.returncode in (-9, 137) else ""
        raise RuntimeError(f"{arguments[0]} {arguments[1]} exited with {result.returncode}"
                           f"{killed}: {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def export_onnx(depth, size, folder):
    """ONNX files of keras.applications' model and of kresnet's folded one, each built and
    exported in a fresh process before anything else: Keras' ONNX export (tf2onnx) peaks
    near 8 GB for ResNet50 and 16 GB for ResNet152. Returns ``({side: path}, note)``."""
    paths = {}
    try:
        for side in SIDES:
            target = os.path.join(folder, f"resnet{depth}-{side}.onnx")
            paths[side] = child("--child-export", side, "--depth", str(depth), "--size",
                                str(size), "--out", target)["path"]
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
        return {}, f"onnxruntime rows skipped: export failed ({error})"
    return paths, None


def ort_runner(path):
    """onnxruntime on ``path``; threads sleep between runs instead of spinning, which is
    faster on a machine shared with other work (on an idle one it makes little difference)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda x: session.run(None, {input_name: x})[0]


def child_export(args):
    import kresnet


    model = build(args.child_export, args.depth, args.size)
    if args.child_export == "kresnet":
        model = kresnet.fold_batchnorm(model)
    print(json.dumps({"path": kresnet.export(model, args.out, "onnx")}))
    return 0


def peak_rss_mb():
    """The process' peak resident set size: VmHWM where /proc has it (ru_maxrss is not reset
    by exec on Linux, so a child would report its parent's peak), else ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS


def peak_memory(side, depth, size, batch):
    """Peak RSS (MB) of a fresh process that builds ``side``'s model and runs one batch."""
    return child("--child-memory", side, "--depth", str(depth), "--size", str(size),
                 "--batch", str(batch))["peak_mb"]


def build_and_run(side, depth, size, batch):
    """Build ``side``'s model and run one batch through it: what the memory row measures."""
    import numpy as np

    model = build(side, depth, size)
    x = np.random.default_rng(0).random((batch, size, size, 3), "float32")
    tf_runner(model, False)(x)


def child_memory(args):
    build_and_run(args.child_memory, args.depth, args.size, args.batch)
    print(json.dumps({"peak_mb": peak_rss_mb()}))
    return 0


CLEAR_REFS = "/proc/self/clear_refs"


def reset_peak():
    """Reset this process's peak RSS to its current RSS (Linux 4.0 and later: writing 5 to
    /proc/self/clear_refs); whether it could."""
    try:
        with open(CLEAR_REFS, "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def peak_memory_here(side, depth, size, batch):
    """--quick: the peak RSS (MB) of this process while it builds ``side``'s model and runs
    one batch, the peak first reset to the current RSS. It saves two fresh processes (a
    TensorFlow import each), but includes all this process already holds."""
    if not reset_peak():
        raise OSError(f"cannot reset the peak resident size through {CLEAR_REFS}")
    build_and_run(side, depth, size, batch)
    return peak_rss_mb()


def machine():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "keras": keras.__version__}
    for package in ONNX_PACKAGES:
        if importlib.util.find_spec(package) is not None:
            versions[package] = importlib.import_module(package).__version__
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "gpus": len(tf.config.list_physical_devices("GPU")), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


# ----------------------------------------------------------------------------- one depth


def bench_depth(depth, args, onnx_note, onnx_files, log):
    import keras
    import numpy as np
    import tensorflow as tf

    import kresnet
    from kresnet.folding import fold_batchnorm

    tf.get_logger().setLevel("ERROR")  # retracing notes: each runner traces once per batch

    size, (small, large) = args.size, args.batches
    alternating = functools.partial(alternate, pause=args.pause)
    results, notes = {}, []

    def row(key, pair, samples=None, note=None):
        results[key] = {"values": pair, "samples": samples, "note": note}

    def median(samples, name):
        return statistics.median(samples[name])

    log(f"ResNet{depth}: build time")
    # kresnet's he_normal is a truncated normal, which TensorFlow samples slowly; kresnet draws
    # it by the inverse CDF (kresnet.initializers). keras.applications' glorot_uniform and
    # he_uniform draw a uniform.
    kept = {}  # --quick: each side's last build is the model measured below

    def build_task(side, **options):
        def run():  # timed by hand: the previous repeat's model is let go outside the timing
            start = time.perf_counter()
            model = build(side, depth, size, **options)
            seconds = time.perf_counter() - start
            if args.quick and not options:
                kept[side] = model
            return seconds
        return run

    tasks = {side: build_task(side) for side in SIDES}
    tasks["he_uniform"] = build_task("kresnet", kernel_initializer="he_uniform")
    samples = alternating(tasks, args.repeats, args.warmup, prepare=fresh)
    row("build", [median(samples, s) for s in SIDES],
        {s: samples[s] for s in SIDES})
    row("build_uniform", [median(samples, SIDES[0]), median(samples, "he_uniform")],
        {SIDES[0]: samples[SIDES[0]], "kresnet": samples["he_uniform"]})

    fresh()
    models = dict(kept) if kept else {side: build(side, depth, size) for side in SIDES}
    kept.clear()
    folded = fold_batchnorm(models["kresnet"])
    rng = np.random.default_rng(0)
    work = tempfile.mkdtemp(prefix="kresnet-bench-")
    try:
        once = args.quick  # one trace for both batch sizes (see tf_runner)
        runners = {"ka_tf": tf_runner(models["keras.applications"], False, once),
                   "kr_tf": tf_runner(models["kresnet"], False, once),
                   "kr_folded": tf_runner(folded, False, once),
                   "ka_xla": tf_runner(models["keras.applications"], True, once),
                   "kr_folded_xla": tf_runner(folded, True, once)}
        ort_note = onnx_note or onnx_files.get("note")
        if ort_note is None:
            runners["ka_ort"] = ort_runner(onnx_files["paths"]["keras.applications"])
            runners["kr_folded_ort"] = ort_runner(onnx_files["paths"]["kresnet"])
        else:
            notes.append(ort_note)
        inference = {}
        for tag, batch in (("small", small), ("large", large)):
            log(f"ResNet{depth}: inference at batch {batch}")
            x_np = rng.random((batch, size, size, 3), dtype=np.float32)
            x_tf = tf.constant(x_np)
            tasks = {name: throughput(run, x_np if name.endswith("ort") else x_tf, batch,
                                      args.calls[batch])
                     for name, run in runners.items()}
            inference[tag] = samples = alternating(tasks, args.repeats, args.warmup)
            med = {name: median(samples, name) for name in samples}
            row(f"tf_{tag}", [med["ka_tf"], med["kr_tf"]],
                {"keras.applications": samples["ka_tf"], "kresnet": samples["kr_tf"]})
            row(f"folded_{tag}", [med["ka_tf"], med["kr_folded"]],
                {"keras.applications": samples["ka_tf"], "kresnet": samples["kr_folded"]})
            row(f"xla_{tag}", [med["ka_xla"], med["kr_folded_xla"]],
                {"keras.applications": samples["ka_xla"], "kresnet": samples["kr_folded_xla"]})
            if "ka_ort" in med:
                row(f"ort_{tag}", [med["ka_ort"], med["kr_folded_ort"]],
                    {"keras.applications": samples["ka_ort"],
                     "kresnet": samples["kr_folded_ort"]})
            else:
                row(f"ort_{tag}", [None, None], note=ort_note)
            if tag == "large":
                if "ka_ort" in med:
                    row("ort_vs_tf", [med["ka_tf"], med["kr_folded_ort"]],
                        {"keras.applications": samples["ka_tf"],
                         "kresnet": samples["kr_folded_ort"]})
                else:
                    row("ort_vs_tf", [None, None], note=ort_note)
        del runners

        log(f"ResNet{depth}: save and load")
        paths = {side: os.path.join(work, f"{i}.keras") for i, side in enumerate(SIDES)}
        save = alternating({side: timed(lambda side=side: models[side].save(paths[side]))
                            for side in SIDES}, args.repeats, args.warmup)
        row("save", [median(save, s) for s in SIDES], save)
        row("size", [os.path.getsize(paths[s]) / 2**20 for s in SIDES])

        def load(side, keras_only=False):
            # kresnet.load checks the file first (docs/security.md) and builds without drawing
            # the kernels it then reads; keras.applications' users call Keras' loader.
            if side == "kresnet" and not keras_only:
                kresnet.load(paths[side], compile=False)
            else:
                keras.saving.load_model(paths[side], compile=False)

        loaded = alternating({side: timed(lambda side=side: load(side)) for side in SIDES},
                             args.repeats, args.warmup, prepare=gc.collect)
        row("load", [median(loaded, s) for s in SIDES], loaded)
        loaded = alternating({side: timed(lambda side=side: load(side, True)) for side in SIDES},
                             args.repeats, args.warmup, prepare=gc.collect)
        row("load_keras", [median(loaded, s) for s in SIDES], loaded)

        log(f"ResNet{depth}: training step at batch {args.train_batch}")
        x = rng.random((args.train_batch, size, size, 3), dtype=np.float32)
        y = np.eye(1000, dtype=np.float32)[rng.integers(0, 1000, args.train_batch)]
        for model in models.values():
            model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy")
        train = alternating({side: timed(lambda side=side: models[side].train_on_batch(x, y))
                             for side in SIDES}, args.repeats, max(args.warmup, 1))
        row("train", [median(train, s) for s in SIDES], train)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    models.clear()
    folded = None
    fresh()

    here = args.quick and reset_peak()
    log(f"ResNet{depth}: peak memory " + ("in this process" if here else "in fresh processes"))
    if here:
        memory = alternating({side: lambda side=side: peak_memory_here(side, depth, size, large)
                              for side in SIDES}, args.memory_repeats, 0, prepare=fresh)
    else:
        memory = alternating({side: lambda side=side: peak_memory(side, depth, size, large)
                              for side in SIDES}, args.memory_repeats, 0)
    row("memory", [median(memory, s) for s in SIDES], memory)
    return results, notes


# ----------------------------------------------------------------------------- output


def finish_rows(results, args):
    """The rows in table order, with labels, ratios and whether each target is met."""
    small, large = args.batches
    rows = []
    for key, (label, unit, better, target) in ROWS.items():
        result = results[key]
        ka, kr = result["values"]
        batch = {"train": args.train_batch}.get(key, small if key.endswith("small") else large)
        ratio = kr / ka if ka and kr is not None else None
        met = None
        if target is not None and ratio is not None:
            bound = float(target.split()[1])
            met = ratio <= bound if target.startswith("<=") else ratio >= bound
        rows.append({"key": key, "metric": label.format(b=batch), "unit": unit,
                     "better": better, "keras.applications": ka, "kresnet": kr,
                     "ratio": ratio, "target": target, "met": met, "note": result["note"],
                     "samples": result["samples"]})
    return rows


def _number(value):
    if value is None:
        return "—"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def table(rows):
    lines = ["| metric | unit | keras.applications | kresnet | ratio | target |",
             "|---|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = "" if r["target"] is None else f"{r['target']}x " + \
            ("(met)" if r["met"] else "(missed)" if r["met"] is False else "(not measured)")
        lines.append(f"| {r['metric']} | {r['unit']} | {_number(r['keras.applications'])} | "
                     f"{_number(r['kresnet'])} | {ratio} | {target.strip()} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child_memory:
        return child_memory(args)
    if args.child_export:
        return child_export(args)
    if args.child_int8:
        import bench_inference

        return bench_inference.child_int8(args.child_int8, args.size, args.out)

    def log(message):
        print(f"[benchmark] {message}", file=sys.stderr, flush=True)

    onnx_note = onnx_missing()
    if onnx_note is None and (args.onnx == "off" or (args.onnx == "auto" and args.quick)):
        onnx_note = ("onnxruntime rows skipped: " + ("--onnx off" if args.onnx == "off" else
                     "--quick leaves them out (tf2onnx takes ~20 s a model); --onnx on"))
    info = machine()
    if args.inference:
        import bench_inference

        return bench_inference.main(args, info, log)
    report = {"machine": info, "settings": {
        "quick": args.quick, "depths": args.depths, "input": [args.size, args.size, 3],
        "classes": 1000, "repeats": args.repeats, "warmup": args.warmup,
        "memory_repeats": args.memory_repeats, "batches": list(args.batches),
        "train_batch": args.train_batch,
        "calls_per_repeat": {str(k): v for k, v in args.calls.items()},
        "statistic": "median", "order": "alternating keras.applications, kresnet"},
        "results": {}, "notes": []}
    onnx_folder = tempfile.mkdtemp(prefix="kresnet-bench-onnx-")
    onnx_files = {}
    for depth in args.depths if onnx_note is None else ():
        log(f"ResNet{depth}: exporting both models to ONNX in fresh processes")
        paths, note = export_onnx(depth, args.size, onnx_folder)
        onnx_files[depth] = {"paths": paths, "note": note}
    try:
        for depth in args.depths:
            results, notes = bench_depth(depth, args, onnx_note, onnx_files.get(depth, {}),
                                         log)
            rows = finish_rows(results, args)
            report["results"][f"ResNet{depth}"] = {"rows": rows, "notes": notes}
            print(f"\n### ResNet{depth}, {args.size}x{args.size}x3, 1000 classes\n")
            print(table(rows))
            for note in notes:
                print(f"\nNote: {note}")
    finally:
        shutil.rmtree(onnx_folder, ignore_errors=True)
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"\n{info['cpu']}, {info['cores']} cores, {info['date']}; median of {args.repeats} "
          f"repeat(s) after {args.warmup} warm-up, sides alternating; load average "
          f"{info['load_average_start']} at start, {info['load_average_end']} at end.")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

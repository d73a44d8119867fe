"""The inference paths of ``kresnet.optimize`` against keras.applications fp32 in TensorFlow.

Run through ``python scripts/benchmark.py --inference`` (see ``--help``). For each depth it
measures, in one process and alternating within each repeat:

- the baseline: ``keras.applications.ResNet{depth}(weights=None)`` in float32, its forward
  pass in a ``tf.function`` (ResNet-18, which keras.applications lacks: ``kresnet.ResNet18``
  as it is, labelled so);
- ``kresnet.optimize(model, p).predict(x)`` for p = float32, bfloat16 and int8, the product's
  own call; int8's ONNX file is made in a fresh process first (tf2onnx peaks at several GB),
  calibrated on random images, as its speed does not depend on the values (the accuracy
  test is tests/test_inference.py's, on a trained model);

at each batch size, as images per second and, at batch 1, as latency in milliseconds. The
benchmark measures the float32 and bfloat16 matmul peaks of this machine (a 4096 x 4096
``tf.matmul``, best of its repeats) and gives each float path's FLOP/s as a fraction of the
peak of its precision (2 FLOPs per multiply-accumulate of ``kresnet.count_macs``).
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PATHS = ("baseline", "float32", "bfloat16", "int8")
#: Each path's target at the large batch, as a ratio to the baseline (issue #17), for
#: ResNet-50; float32 also aims at 0.95 of the float32 matmul peak.
TARGETS = {"float32": 1.19, "bfloat16": 2.0, "int8": 3.5}
PEAK_TARGET = {"float32": 0.95}
HERE = os.path.dirname(os.path.abspath(__file__))


def matmul_peak(dtype, size=4096, repeats=5):
    """GFLOP/s of the best of ``repeats`` ``size``-square matmuls in ``dtype``."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((size, size), (1, 2), dtype=tf.float32)
    a = tf.cast(a, dtype)
    matmul = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
    matmul(a).numpy()  # traced and warmed up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def baseline_model(depth, size):
    import keras

    import kresnet

    if depth == 18:
        return kresnet.ResNet18(input_shape=(size, size, 3)), "kresnet.ResNet18 fp32 (plain)"
    model = getattr(keras.applications, f"ResNet{depth}")(weights=None,
                                                          input_shape=(size, size, 3))
    return model, "keras.applications fp32"


def child_int8(depth, size, out):
    """Build kresnet's ResNet{depth}, quantize it (random calibration), write the file."""
    import numpy as np

    import kresnet

    model = getattr(kresnet, f"ResNet{depth}")(input_shape=(size, size, 3))
    calibration = np.random.default_rng(0).random((64, size, size, 3), dtype=np.float32)
    fast = kresnet.optimize(model, "int8", calibration=calibration, progress=False)
    print(json.dumps({"path": fast.export(out), "keep_float": list(fast.keep_float)}))
    return 0


def _int8_file(depth, size, folder):
    out = os.path.join(folder, f"resnet{depth}-int8.onnx")
    command = [sys.executable, os.path.join(HERE, "benchmark.py"), "--child-int8",
               str(depth), "--size", str(size), "--out", out]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"int8 export of ResNet{depth} failed ({result.returncode}): "
                           f"{lines[-1][:300] if lines else 'no message'}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_depth(depth, args, folder, peaks, log):
    import keras
    import numpy as np
    import tensorflow as tf

    import kresnet
    from kresnet.inference import InferenceModel

    size = args.size
    log(f"ResNet{depth}: int8 file in a fresh process")
    int8 = _int8_file(depth, size, folder)
    keras.backend.clear_session()
    gc.collect()
    baseline, baseline_label = baseline_model(depth, size)
    model = getattr(kresnet, f"ResNet{depth}")(input_shape=(size, size, 3))
    macs = kresnet.count_macs(model)
    with open(int8["path"], "rb") as file:
        runners = {"float32": kresnet.optimize(model, "float32"),
                   "bfloat16": kresnet.optimize(model, "bfloat16"),
                   "int8": InferenceModel("int8", (size, size, 3), onnx=file.read())}
    forward = tf.function(lambda x: baseline(x, training=False))
    calls = {name: (lambda x, r=runner: r.predict(x, batch_size=len(x)))
             for name, runner in runners.items()}
    calls = {"baseline": lambda x: forward(x).numpy(), **calls}
    rng = np.random.default_rng(0)
    results = {"baseline": baseline_label, "gmacs": macs / 1e9, "keep_float": int8["keep_float"],
               "batches": {}}
    for batch in args.batches:
        log(f"ResNet{depth}: batch {batch}")
        x = rng.random((batch, size, size, 3), dtype=np.float32)
        repeat_calls = max(1, args.images // batch)
        samples = {name: [] for name in PATHS}
        for round_ in range(args.warmup + args.repeats):
            for name in PATHS:
                time.sleep(args.pause)
                start = time.perf_counter()
                for _ in range(repeat_calls):
                    calls[name](x)
                rate = batch * repeat_calls / (time.perf_counter() - start)
                if round_ >= args.warmup:
                    samples[name].append(rate)
        rates = {name: statistics.median(values) for name, values in samples.items()}
        results["batches"][str(batch)] = {
            "images_per_second": rates, "samples": samples,
            "latency_ms": {name: 1000 * batch / rate for name, rate in rates.items()},
            "ratio": {name: rates[name] / rates["baseline"] for name in PATHS},
            "peak_fraction": {name: 2 * macs * rates[name] / 1e9 / peaks[name]
                              for name in ("float32", "bfloat16")},
        }
    del runners, calls, baseline, model
    keras.backend.clear_session()
    gc.collect()
    return results


def table(depth, result, args, peaks):
    large = str(args.batches[-1])
    lines = [f"### ResNet{depth}, {args.size}x{args.size}x3: {result['baseline']} = 1.00x, "
             f"{result['gmacs']:.2f} GMACs",
             "",
             "| path | " + " | ".join(f"img/s, batch {b}" for b in args.batches) +
             f" | ratio, batch {large} | share of its matmul peak, batch {large} | "
             "latency, batch 1 | target |",
             "|---|" + "---:|" * (len(args.batches) + 3) + "---|"]
    for name in PATHS:
        rates = [result["batches"][str(b)]["images_per_second"][name] for b in args.batches]
        ratio = result["batches"][large]["ratio"][name]
        peak = result["batches"][large]["peak_fraction"].get(name)
        peak_text = "—" if peak is None else f"{peak:.2f} of {peaks[name]:.0f} GFLOP/s"
        latency = result["batches"].get("1", {}).get("latency_ms", {}).get(name)
        target = ""
        if name in TARGETS and depth == 50:
            met = ratio >= TARGETS[name] and (peak is None or name not in PEAK_TARGET or
                                               peak >= PEAK_TARGET[name])
            target = f">= {TARGETS[name]}x" + (f", >= {PEAK_TARGET[name]} of peak"
                                               if name in PEAK_TARGET else "") + \
                (" (met)" if met else " (missed)")
        label = result["baseline"] if name == "baseline" else f"kresnet.optimize {name}"
        lines.append(f"| {label} | " + " | ".join(f"{r:.3g}" if r < 100 else f"{r:.0f}"
                                                   for r in rates) +
                     f" | {ratio:.2f}x | {peak_text} | "
                     f"{'—' if latency is None else f'{latency:.1f} ms'} | {target} |")
    return "\n".join(lines)


def figure(report, path):
    """Images per second against batch size, one panel per depth, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = list(report["results"])
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), squeeze=False)
    for axis, depth in zip(axes[0], depths):
        result = report["results"][depth]
        batches = [int(b) for b in result["batches"]]
        for name in PATHS:
            rates = [result["batches"][str(b)]["images_per_second"][name] for b in batches]
            label = result["baseline"] if name == "baseline" else f"kresnet.optimize {name}"
            axis.plot(batches, rates, marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_xticks(batches, [str(b) for b in batches])
        axis.set_title(f"{depth}, {report['settings']['size']}x{report['settings']['size']}")
        axis.set_xlabel("batch size")
        axis.set_ylabel("images per second")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)  # each panel's own: the baselines differ (ResNet18's)
    fig.suptitle(f"kresnet.optimize on {report['machine']['cpu']}, "
                 f"{report['machine']['cores']} cores ({report['machine']['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(args, machine, log):
    depths = args.depths or ([18] if args.quick else [18, 50, 152])
    args.batches = (1, 4) if args.quick else (1, 8, 32)
    args.images = 4 if args.quick else 32  # images per measured call group at each batch
    log("matmul peaks")
    peaks = {"float32": matmul_peak("float32", 512 if args.quick else 4096),
             "bfloat16": matmul_peak("bfloat16", 512 if args.quick else 4096)}
    report = {"machine": machine, "settings": {
        "size": args.size, "depths": depths, "batches": list(args.batches),
        "repeats": args.repeats, "warmup": args.warmup, "images_per_call_group": args.images,
        "statistic": "median", "order": "alternating " + ", ".join(PATHS)},
        "matmul_peak_gflops": peaks, "results": {}}
    folder = tempfile.mkdtemp(prefix="kresnet-bench-int8-")
    for depth in depths:
        result = bench_depth(depth, args, folder, peaks, log)
        report["results"][f"ResNet{depth}"] = result
        print("\n" + table(depth, result, args, peaks))
    machine["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"\nmatmul peak: {peaks['float32']:.0f} GFLOP/s float32, {peaks['bfloat16']:.0f} "
          f"GFLOP/s bfloat16. {machine['cpu']}, {machine['cores']} cores, {machine['date']}; "
          f"median of {args.repeats} repeat(s) after {args.warmup} warm-up, paths "
          f"alternating; load average {machine['load_average_start']} at start, "
          f"{machine['load_average_end']} at end.")
    if args.figure:
        print(f"figure: {figure(report, args.figure)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(report, file, indent=1)
    return 0

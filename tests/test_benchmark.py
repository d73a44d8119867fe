"""scripts/benchmark.py --quick: the table and the JSON have their format (no time is checked)."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = pytest.mark.slow

SCRIPT = os.path.join(ROOT, "scripts", "benchmark.py")
HEADER = "| metric | unit | keras.applications | kresnet | ratio | target |"
ROW_KEYS = {"key", "metric", "unit", "better", "keras.applications", "kresnet", "ratio",
            "target", "met", "note", "samples"}


def test_quick_benchmark_prints_a_table_and_writes_json(tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, SCRIPT, "--quick", "--json", str(path)],
                            check=False, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(path.read_text(encoding="utf-8"))

    assert set(report) == {"machine", "settings", "results", "notes"}
    assert {"cpu", "cores", "date", "versions"} <= set(report["machine"])
    settings = report["settings"]
    assert settings["quick"] is True and settings["repeats"] == 1
    assert settings["statistic"] == "median"
    assert list(report["results"]) == ["ResNet50"]
    rows = report["results"]["ResNet50"]["rows"]
    keys = [row["key"] for row in rows]
    assert keys[:2] == ["build", "build_uniform"] and "memory" in keys and "ort_vs_tf" in keys
    for row in rows:
        assert set(row) == ROW_KEYS, row["key"]
        assert row["unit"] in ("s", "img/s", "MB") and row["better"] in ("lower", "higher")
        measured = row["kresnet"] is not None
        if measured:
            assert row["keras.applications"] > 0 and row["kresnet"] > 0
            assert abs(row["ratio"] - row["kresnet"] / row["keras.applications"]) < 1e-9
        else:  # onnxruntime rows, when left out, say why
            assert row["key"].startswith("ort") and "onnxruntime" in row["note"]
        if row["target"] is not None and measured:
            assert isinstance(row["met"], bool)

    lines = result.stdout.splitlines()
    assert "### ResNet50, 32x32x3, 1000 classes" in lines
    start = lines.index(HEADER)
    assert lines[start + 1] == "|---|---|---:|---:|---:|---|"
    table = lines[start + 2:start + 2 + len(rows)]
    assert all(line.startswith("| ") and line.count("|") == 7 for line in table), table
    for line, row in zip(table, rows):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[0] == row["metric"] and cells[1] == row["unit"]
        assert re.fullmatch(r"\d+\.\d\dx|—", cells[4]), line
        assert re.fullmatch(r"|[<>]= \d\.\d+x \((met|missed|not measured)\)", cells[5]), line
    assert re.search(r"median of 1 repeat\(s\) after 1 warm-up, sides alternating", result.stdout)


def test_quick_inference_benchmark_reports_every_path(tmp_path):
    """--inference --quick: every path of kresnet.optimize measured at both batch sizes, with
    ratios to the baseline, shares of the measured matmul peaks, and the figure."""
    path, figure = tmp_path / "inference.json", tmp_path / "inference.png"
    result = subprocess.run([sys.executable, SCRIPT, "--inference", "--quick", "--json",
                             str(path), "--figure", str(figure)],
                            check=False, capture_output=True, text=True, timeout=900,
                            cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(path.read_text(encoding="utf-8"))
    assert set(report) == {"machine", "settings", "matmul_peak_gflops", "results"}
    assert {"load_average_start", "load_average_end"} <= set(report["machine"])
    peaks = report["matmul_peak_gflops"]
    assert set(peaks) == {"float32", "bfloat16"} and all(v > 0 for v in peaks.values())
    assert list(report["results"]) == ["ResNet18"]
    depth = report["results"]["ResNet18"]
    assert depth["keep_float"] == ["conv1", "fc1000"] and depth["gmacs"] > 0
    paths = ["baseline", "float32", "bfloat16", "int8"]
    assert list(depth["batches"]) == ["1", "4"]
    for batch in depth["batches"].values():
        assert list(batch["images_per_second"]) == paths
        assert all(v > 0 for v in batch["images_per_second"].values())
        assert all(v > 0 for v in batch["latency_ms"].values())
        for name in paths:
            want = batch["images_per_second"][name] / batch["images_per_second"]["baseline"]
            assert abs(batch["ratio"][name] - want) < 1e-9
        assert set(batch["peak_fraction"]) == {"float32", "bfloat16"}
        assert all(0 < v < 1.5 for v in batch["peak_fraction"].values())
    lines = result.stdout.splitlines()
    assert any(line.startswith("### ResNet18, 32x32x3") for line in lines)
    for name in ("kresnet.optimize float32", "kresnet.optimize bfloat16",
                 "kresnet.optimize int8"):
        (line,) = [line for line in lines if line.startswith(f"| {name} |")]
        assert re.search(r"\| \d+\.\d\dx \|", line), line
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

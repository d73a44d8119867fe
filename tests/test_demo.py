"""The README's main command works: scripts/demo.py builds, plots, saves, reloads and trains."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})  # what scripts/setup-env.sh sets
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # No TensorFlow start-up lines (oneDNN, CUDA drivers, absl), from any of its processes.
    for noise in ("oneDNN", "cuda", "absl", "I0000", "E0000"):
        assert noise not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "parameters: 23,999,522" in result.stdout
    assert "max |difference| = 0.00e+00" in result.stdout
    accuracy = float(result.stdout.split("test accuracy after 4 epochs: ")[1].split("%")[0])
    assert accuracy >= 95.0
    assert (tmp_path / "resnet50.keras").stat().st_size > 90 * 2**20
    for name in ("history.csv", "curves.png", "best.keras", "metrics.json"):
        assert (tmp_path / "train" / name).exists(), name
    if shutil.which("dot"):
        assert (tmp_path / "resnet50.png").exists() and (tmp_path / "resnet50.svg").exists()

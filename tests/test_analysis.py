"""Counting, stage tables, compact block diagrams and the command line."""

import os
import shutil
import subprocess
import sys

import pytest

import kresnet
from tests.conftest import ROOT, SHAPE_ONLY

# He et al. 2015 Table 1 (stride on the 1x1) and torchvision's "v1.5" (stride on the 3x3):
# multiply-accumulates per 224x224 image, convolutions and fc1000.
MACS_1X1 = {18: 1_814_073_344, 34: 3_663_761_408, 50: 3_857_973_248, 101: 7_570_194_432,
            152: 11_282_415_616}
MACS_3X3 = {50: 4_089_184_256, 101: 7_801_405_440, 152: 11_513_626_624}


@pytest.mark.xdist_group("full_size")
@pytest.mark.parametrize("depth", [d if d < 50 else pytest.param(d, marks=pytest.mark.slow)
                                   for d in sorted(MACS_1X1)])
def test_count_macs_matches_the_paper_and_torchvision(depth, full_size):
    assert kresnet.count_macs(full_size.structure(f"ResNet{depth}")) == MACS_1X1[depth]
    if depth in MACS_3X3:
        v1_5 = full_size.structure(f"ResNet{depth}", stride_on="3x3")
        assert kresnet.count_macs(v1_5) == MACS_3X3[depth]


@pytest.mark.slow
def test_count_macs_counts_groups_and_refuses_unknown_sizes():
    grouped = kresnet.build("resnext50_32x4d", include_top=False, input_shape=(64, 64, 3),
                            **SHAPE_ONLY)
    layer = grouped.get_layer("res2a_branch2b")
    assert kresnet.analysis.layer_macs(layer) == 16 * 16 * 128 * 3 * 3 * (128 // 32)
    with pytest.raises(ValueError, match="fixed input size"):
        kresnet.count_macs(kresnet.ResNet18(include_top=False, **SHAPE_ONLY))


@pytest.mark.slow
@pytest.mark.xdist_group("full_size")
def test_describe_is_table_1(full_size):
    rows = kresnet.describe(full_size.structure("ResNet50"))
    assert [r["stage"] for r in rows] == ["stem", "res2", "res3", "res4", "res5", "head"]
    assert [r["blocks"] for r in rows] == [0, 3, 4, 6, 3, 0]
    assert rows[4]["output"] == (7, 7, 2048) and rows[4]["layers"] == "res5a_branch2a .. res5c_relu"
    assert sum(r["params"] for r in rows) == 25_636_712
    assert sum(r["macs"] for r in rows) == MACS_1X1[50]
    text = str(rows)
    assert "res4a_branch2a .. res4f_relu" in text and "14x14x1024" in text
    prefixed = kresnet.describe(kresnet.ResNet18(name_prefix="bb_", input_shape=(64, 64, 3),
                                                 **SHAPE_ONLY))
    assert prefixed[1]["stage"] == "res2" and prefixed[1]["first"] == "bb_res2a_branch2a"


@pytest.mark.slow
def test_blocks_describe_kinds_and_shortcuts():
    rows = kresnet.analysis.blocks(kresnet.build("resnet50v2", input_shape=(64, 64, 3),
                                                 **SHAPE_ONLY))
    assert [r["shortcut"] for r in rows[:4]] == ["projection", "identity", "subsample",
                                                 "projection"]
    assert rows[0]["kind"] == "pre-activation bottleneck"
    assert kresnet.analysis.blocks(kresnet.build("resnet20", **SHAPE_ONLY))[3]["shortcut"] == \
        "subsample + zeros"
    d = kresnet.analysis.blocks(kresnet.build("resnet50d", input_shape=(64, 64, 3),
                                              **SHAPE_ONLY))
    assert d[3]["shortcut"] == "avg-pool + projection"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is missing")
@pytest.mark.xdist_group("full_size")
def test_plot_blocks_is_readable_at_resnet152(tmp_path, full_size):
    from PIL import Image

    model = full_size.structure("ResNet152")
    png = kresnet.plot_blocks(model, tmp_path / "r152.png")
    with Image.open(png) as image:
        width, height = image.size
    assert height < 32767 and height > 50 * 52  # 50 blocks + stem + head, not scaled down
    svg = open(kresnet.plot_blocks(model, tmp_path / "r152.svg"), encoding="utf-8").read()
    assert "res4b35" in svg and "projection" in svg and "7x7x2048" in svg


def run_cli(*args):
    """``python -m kresnet ARGS`` in a new Python, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "kresnet", *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def run_main(capsys, *args):
    """``kresnet.cli.main(ARGS)`` in this process (TensorFlow is imported already), with
    what ``run_cli`` returns: exit status, stdout and stderr."""
    from kresnet.cli import main  # noqa: PLC0415

    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as stop:  # argparse: --help and bad arguments
        status = stop.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["kresnet", *args], status, out, err)


@pytest.mark.slow
def test_cli_commands(tmp_path, capsys):
    # One command in a new Python, through ``python -m kresnet``; the others in this process.
    result = run_cli("flops", "resnet50")
    assert result.returncode == 0, result.stderr
    assert "3,857,973,248 multiply-accumulates" in result.stdout
    # TensorFlow's start-up lines (written to file descriptor 2 even with
    # TF_CPP_MIN_LOG_LEVEL=3) are kept out: the one-line errors below stay one line.
    assert result.stderr == "", result.stderr
    result = run_main(capsys, "table", "--depths", "18", "50")
    assert result.returncode == 0, result.stderr
    assert "11,689,512" in result.stdout and "3.86" in result.stdout
    result = run_main(capsys, "summary", "resnet20")
    assert result.returncode == 0 and "res4c_relu" in result.stdout
    if shutil.which("dot"):
        result = run_main(capsys, "plot", "resnet18", "-o", str(tmp_path / "r18.svg"),
                          "--compact")
        assert result.returncode == 0 and (tmp_path / "r18.svg").exists()
    for command in ("summary", "table", "plot", "flops", "export"):
        assert run_cli(command, "--help").returncode == 0  # answered without TensorFlow


# Parsing errors and a missing file are refused before TensorFlow is imported: those cases
# run in a new Python (``fresh``), as a user meets them. The others need TensorFlow and run
# in this process, which has it; that its start-up adds nothing to stderr in a new Python
# is checked in test_cli_commands.
@pytest.mark.parametrize("args,message,fresh", [
    pytest.param(["flops", "resnet51"], "unknown preset 'resnet51'", False,
                 marks=pytest.mark.slow),
    (["flops", "resnet50", "--input-shape", "64x64"], "not a shape", True),
    pytest.param(["flops", "resnet50", "--input-shape", "16,16,3"], "at least 32", False,
                 marks=pytest.mark.slow),
    (["plot", "resnet18"], "required: -o/--output", True),
    (["explode"], "invalid choice", True),
    pytest.param(["summary", "missing.keras"], "no file at 'missing.keras'", True,
                 marks=pytest.mark.slow),
])
def test_cli_bad_arguments_exit_2_with_one_line(args, message, fresh, capsys):
    result = run_cli(*args) if fresh else run_main(capsys, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr

"""Files that cannot hurt: every crafted file of scripts/attack_corpus.py is refused by
kresnet's own checks (whatever Keras would do), within bounded time and memory, without
writing a file or asking a network address; real models still load."""

import http.server
import json
import os
import struct
import sys
import threading
import time
import tracemalloc
import zipfile

import h5py
import keras
import numpy as np
import pytest

import kresnet
from kresnet import cli, safety
from tests.conftest import ROOT, run_in_fresh_process

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import attack_corpus  # noqa: E402

pytestmark = pytest.mark.xdist_group("test_security")


class _Counter(http.server.BaseHTTPRequestHandler):
    requests = 0

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"owned\n")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """A local web server that counts the requests it gets."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/payload.txt"
    httpd.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, server):
    folder = str(tmp_path_factory.mktemp("corpus"))
    return folder, attack_corpus.make(folder, origin=server)


def _everything_under(folder):
    return {os.path.join(root, name) for root, _, files in os.walk(folder) for name in files}


def test_the_counting_server_counts(tmp_path, server):
    """The get_file payloads point at this server: a download through it is counted, so a
    count of 0 after the corpus means that no payload asked for it."""
    before = _Counter.requests
    keras.utils.get_file("probe.txt", origin=server, cache_dir=str(tmp_path))
    assert _Counter.requests == before + 1


CASES = ["lambda-layer", "lambda-in-activation", "foreign-module", "builtin-function",
         "registered-name", "get-file", "get-file-function", "get-file-internal",
         "enable-unsafe", "vocabulary-file", "member-dotdot", "member-assets-dotdot",
         "member-absolute", "member-backslash", "member-nul", "member-unknown",
         "member-duplicate", "h5-external-link", "h5-soft-link", "h5-external-storage",
         "h5-virtual-dataset", "h5-allocation-bomb", "bomb-config", "bomb-metadata",
         "bomb-weights", "bomb-asset", "json-bomb", "json-deep", "html-page"]


def test_the_corpus_is_the_listed_one(corpus):
    assert list(corpus[1]) == CASES


@pytest.mark.parametrize("case", CASES)
def test_each_crafted_file_is_refused_by_kresnet(case, corpus, monkeypatch):
    folder, cases = corpus
    path, expected, verdict = cases[case]
    work = os.path.join(folder, "work")
    os.makedirs(work, exist_ok=True)
    monkeypatch.chdir(work)  # where a relative path in a payload would land
    before, requests = _everything_under(folder), _Counter.requests
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        kresnet.load(path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    message = str(error.value)
    assert repr(path) in message and expected in message, message
    # Refused by kresnet's checks, before Keras read anything.
    assert isinstance(error.value, (safety.UnsafeFileError, safety.NotAModelError)), message
    # Bounded work: the 2 GB bombs included (before: 40 s and 6 GB for the config bomb).
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB"
    assert seconds < 1.0, f"{seconds:.2f} s"
    report = kresnet.inspect(path)
    assert report.verdict == verdict, str(report)
    assert report.exit_code == {"unsafe": 1, "not a model": 2}[verdict]
    assert cli.main(["inspect", path]) == report.exit_code
    # Nothing written anywhere in the corpus folder (the payloads aim inside it) and no
    # request made to the server the get_file payloads name.
    assert _everything_under(folder) == before
    assert _Counter.requests == requests


def test_trusted_lifts_only_the_allow_list(corpus):
    _, cases = corpus
    for case in ("bomb-config", "member-dotdot", "h5-external-link", "json-bomb"):
        path, expected, _ = cases[case]
        with pytest.raises(safety.UnsafeFileError, match="trusted=True does not lift"):
            kresnet.load(path, trusted=True)
    path, expected, _ = cases["lambda-layer"]
    with pytest.raises(safety.UnsafeFileError, match=r"trusted=True\) only if you trust"):
        kresnet.load(path)


def test_the_kresnet_inspect_command_exits_0_1_2(corpus, tmp_path):
    _, cases = corpus
    safe = kresnet.save(kresnet.create_resnet((32, 32, 3), 3, blocks=(1,)), tmp_path / "ok.keras")
    # Each command is a process of its own (``python -m kresnet``: kresnet/__main__.py run
    # as __main__), whose exit status is checked; forked from a Python that has imported
    # Keras (tests/conftest.py), so that the three do not import TensorFlow three times.
    main = os.path.join(ROOT, "kresnet", "__main__.py")
    for path, status in ((safe, 0), (cases["get-file"][0], 1), (cases["html-page"][0], 2)):
        result = run_in_fresh_process(main, ["inspect", path, "--json"], timeout=300)
        assert result.returncode == status, result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert report["exit_code"] == status and report["path"] == path
    assert report["verdict"] == "not a model" and "HTML page" in report["reasons"][0]


def test_inspect_reports_what_a_file_holds_without_building_it(tmp_path, count_layers):
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,), name_prefix="x_")
    path = kresnet.save(model, tmp_path / "tiny.keras")
    built = count_layers()
    report = kresnet.inspect(path)
    assert count_layers() == built  # nothing was built
    assert report.verdict == "safe" and report.reasons == [] and report.exit_code == 0
    assert report.model_name == model.name and report.keras_version == keras.__version__
    assert report.parameters == model.count_params()
    assert sum(report.layers.values()) == len(model.layers)
    assert report.layers["Conv2D"] == sum(isinstance(layer, keras.layers.Conv2D)
                                          for layer in model.layers)
    assert report.kresnet_names is True
    text = str(report)
    assert "verdict: safe" in text and f"{model.count_params():,}" in text
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    other_path = kresnet.save(other, tmp_path / "other.keras")
    assert kresnet.inspect(other_path).kresnet_names is False
    assert kresnet.inspect(tmp_path / "missing.keras").exit_code == 2


def test_inspect_lists_every_unsafe_object(corpus, tmp_path):
    _, cases = corpus
    config = json.loads(zipfile.ZipFile(cases["get-file"][0]).read("config.json"))
    config["config"]["layers"][-1]["class_name"] = "Lambda"
    members = dict(attack_corpus._members(cases["get-file"][0]))
    path = attack_corpus.write_zip(tmp_path / "two.keras", [
        (name, json.dumps(config).encode() if name == "config.json" else data)
        for name, data in members.items()])
    reasons = kresnet.inspect(path).reasons
    assert len(reasons) == 2, reasons
    assert "keras.utils.get_file" in reasons[0] and "Lambda" in reasons[1]


# --- real models still load ---------------------------------------------------------------

def _recompressed(path, out):
    """The archive with every member deflated, as a zip tool would write it."""
    with zipfile.ZipFile(path) as source, \
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return str(out)


@pytest.mark.slow
def test_a_full_size_all_zero_model_recompressed_still_loads(tmp_path):
    model = kresnet.ResNet50(kernel_initializer="zeros")  # no random draws to overwrite
    model.set_weights([np.zeros(w.shape, w.dtype) for w in model.weights])
    path = _recompressed(kresnet.save(model, tmp_path / "zeros.keras"),
                         tmp_path / "zeros-deflated.keras")
    info = zipfile.ZipFile(path).getinfo("model.weights.h5")
    assert info.file_size > safety.LIMITS.ratio * info.compress_size  # it does compress well
    loaded = kresnet.load(path)
    assert loaded.count_params() == 25_636_712
    assert not any(np.any(w) for w in loaded.get_weights())


def test_a_model_with_assets_loads(tmp_path):
    inputs = keras.Input((1,), dtype="string", name="words")
    lookup = keras.layers.StringLookup(vocabulary=["a", "b", "c"], name="lookup")
    path = kresnet.save(keras.Model(inputs, lookup(inputs)), tmp_path / "lookup.keras")
    loaded = kresnet.load(path)
    assert loaded.get_layer("lookup").get_vocabulary() == ["[UNK]", "a", "b", "c"]


def test_keras_writes_only_the_allowed_members(tmp_path):
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    model.compile("adam", "sparse_categorical_crossentropy")
    with zipfile.ZipFile(kresnet.save(model, tmp_path / "m.keras")) as archive:
        names = archive.namelist()
    assert sorted(names) == ["config.json", "metadata.json", "model.weights.h5"]
    assert all(safety.member_problem(name) is None for name in names)


@pytest.mark.parametrize("name,problem", [
    ("assets/a/b.txt", None), ("assets/", None), ("../x", "'..'"), ("assets/./x", "'.' part"),
    ("C:/x", "absolute"), ("/etc/passwd", "absolute"), ("a\\b", "backslash"),
    ("x\0y", "NUL"), ("assets//x", "empty"), ("model.weights.npz", "Keras writes only")])
def test_member_names(name, problem):
    found = safety.member_problem(name)
    assert (found is None) if problem is None else (problem in found), found


def test_limits_can_be_tightened(tmp_path):
    path = kresnet.save(kresnet.create_resnet((32, 32, 3), 3, blocks=(1,)), tmp_path / "m.keras")
    with pytest.raises(safety.UnsafeFileError, match="over the limit of 1,000 for config.json"):
        kresnet.load(path, limits=safety.Limits(config_bytes=1000))


# --- weight files -------------------------------------------------------------------------

def test_load_weights_refuses_hdf5_links_and_checks_keras_files(corpus, tmp_path):
    folder, cases = corpus
    model = kresnet.create_resnet((32, 32, 3), 3, blocks=(1,))
    h5 = tmp_path / "linked.h5"
    model.save_weights(tmp_path / "plain.weights.h5")
    with h5py.File(h5, "w") as file:
        file["layer_names"] = np.array([b"conv1"])
        file["conv1"] = h5py.ExternalLink(attack_corpus._secret_h5(folder), "/")
    with pytest.raises(safety.UnsafeFileError, match=r"HDF5 entry 'conv1': it is an external "
                                                     r"link"):
        kresnet.load_weights(model, h5)
    with pytest.raises(safety.UnsafeFileError, match="Lambda layer runs Python code"):
        kresnet.load_weights(model, cases["lambda-layer"][0])
    assert kresnet.load_weights(model, tmp_path / "plain.weights.h5")["skipped"] == []


def _safetensors(path, header, data=b""):
    raw = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(raw)) + raw + data)
    return str(path)


def test_safetensors_headers_are_checked_before_they_are_read(tmp_path):
    good = _safetensors(tmp_path / "good.safetensors",
                        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "pt"}},
                        np.arange(4, dtype="<f4").tobytes())
    np.testing.assert_array_equal(safety.read_safetensors(good)["w"], [[0, 1], [2, 3]])
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    tracemalloc.start()
    with pytest.raises(safety.UnsafeFileError, match="its header: it declares "
                                                     "1,099,511,627,776 bytes, over the file"):
        safety.read_safetensors(huge)
    assert tracemalloc.get_traced_memory()[1] < 2**20
    tracemalloc.stop()
    outside = _safetensors(tmp_path / "outside.safetensors",
                           {"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}},
                           bytes(16))
    with pytest.raises(safety.UnsafeFileError, match="tensor 'w': its offsets 0..4000"):
        safety.read_safetensors(outside)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates the marker file when unpickled


def test_pth_files_load_only_tensors_and_a_code_pickle_runs_nothing(tmp_path):
    torch = pytest.importorskip("torch") if os.environ.get("KRESNET_REQUIRE_EXTRAS") != "1" \
        else __import__("torch")
    good = tmp_path / "good.pth"
    torch.save({"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}, good)
    state = safety.read_pth(good)
    assert state["fc.weight"].shape == (2, 3) and state["fc.bias"].tolist() == [0, 0]
    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.ones(1), "hook": _Payload(str(marker))}, evil)
    with pytest.raises(safety.UnsafeFileError, match="its pickle: it names Python objects"):
        safety.read_pth(evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: unchecked, it runs
    assert marker.exists()


# --- docs/security.md is held against the code -------------------------------------------

SECURITY = os.path.join(ROOT, "docs", "security.md")


def _table(header):
    from tests.test_errors_doc import _cell, tables  # noqa: PLC0415

    text = open(SECURITY, encoding="utf-8").read()
    rows = next(t for t in tables(text) if header in t[0])
    return [{k: _cell(v) for k, v in row.items()} for row in rows]


def test_security_md_lists_every_crafted_file_with_its_message(corpus):
    documented = {row["crafted file"]: row["message fragment"]
                  for row in _table("crafted file")}
    assert documented == {case: message for case, (_, message, _) in corpus[1].items()}


def test_security_md_gives_every_limit_with_its_default():
    documented = {row["limit"]: row["default"].split(" ")[0] for row in _table("limit")}
    assert documented == {field.name: f"{field.default:,}"
                          for field in __import__("dataclasses").fields(safety.Limits)}

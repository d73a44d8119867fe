# Sourced by demo.sh and test.sh: make .venv with kresnet, its test, export and train extras,
# JAX and PyTorch (the tests run kresnet on those Keras back ends too), Graphviz, and librsvg's
# rsvg-convert (the tests render every SVG with it, as a reader's viewer draws it).
# Re-running is fast: the install runs again only when setup.cfg, pyproject.toml or the pins changed.
# KRESNET_BACKENDS=0 leaves JAX and PyTorch out (their tests are then skipped).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
STAMP=.venv/.kresnet-installed
EXTRAS="test,export,train"
# Exact pins, not kresnet[backends]' ranges: torch==2.13.0 is a CPU build here, where an
# unpinned torch would pull several GB of CUDA libraries.
PINS=()
if [ "${KRESNET_BACKENDS:-1}" != 0 ]; then
    PINS=(jax==0.10.2 torch==2.13.0)
fi
WANT="$( (cat setup.cfg pyproject.toml; echo "$EXTRAS ${PINS[*]}") | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] installing kresnet[$EXTRAS] ${PINS[*]} into .venv (first run takes a minute or two)"
    # uv installs the same wheels as pip, in parallel: 60 s instead of 2:25 on a 2-core
    # machine with empty caches. It reads no pip configuration, so pip's find-links (where a
    # machine keeps wheels on disk, such as the CPU torch) are handed on. pip is the fallback.
    # --compile-bytecode: uv leaves the .pyc files out unless asked (pip writes them), and
    # where PYTHONDONTWRITEBYTECODE is set (it is on this project's machines) every new Python
    # compiles TensorFlow, Keras and JAX again: `import keras` took 29 s instead of 11 there.
    if .venv/bin/python -m pip install --quiet uv && [ -x .venv/bin/uv ]; then
        LINKS=()
        for folder in ${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}; do
            LINKS+=(--find-links "$folder")
        done
        .venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python ${LINKS[@]+"${LINKS[@]}"} \
            -e ".[$EXTRAS]" "${PINS[@]}"
    else
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" "${PINS[@]}"
    fi
    echo "$WANT" > "$STAMP"
fi
# Graphviz' dot draws the pictures; librsvg's rsvg-convert renders every SVG in the tests, as
# a reader's viewer draws it. One apt-get run installs whichever is missing.
MISSING=()
command -v dot >/dev/null 2>&1 || MISSING+=(graphviz)
command -v rsvg-convert >/dev/null 2>&1 || MISSING+=(librsvg2-bin)
if [ ${#MISSING[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing ${MISSING[*]} with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${MISSING[@]}" >/dev/null
    else
        echo "[setup] missing: ${MISSING[*]} (dot draws the pictures, rsvg-convert renders the"
        echo "        SVGs in the tests; what needs them is skipped). Install with:"
        echo "        sudo apt-get install ${MISSING[*]}   (or: brew install graphviz librsvg)"
    fi
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# TensorFlow's oneDNN CPU kernels, which it turns on by itself only on CPUs with AVX-512 VNNI
# or BF16 or AMX: on an AVX2 CPU its own kernels train about half as fast and cannot run a
# channels_first convolution (kresnet.training.startup.prefer_onednn; 0 turns them off).
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
# shellcheck disable=SC1091
source .venv/bin/activate

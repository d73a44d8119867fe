# Sourced by demo.sh and test.sh: make .venv with kresnet, its test, export and train extras,
# JAX and PyTorch (the tests run kresnet on those Keras back ends too), Graphviz, and librsvg's
# rsvg-convert (the tests render every SVG with it, as a reader's viewer draws it).
# Re-running is fast: pip runs again only when setup.cfg, pyproject.toml or the pins changed.
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
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]" "${PINS[@]}"
    echo "$WANT" > "$STAMP"
fi
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing Graphviz with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null
    else
        echo "[setup] Graphviz' dot is missing; pictures will be skipped. Install it with:"
        echo "        sudo apt-get install graphviz   (or: brew install graphviz)"
    fi
fi
if ! command -v rsvg-convert >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing librsvg2-bin (rsvg-convert) with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librsvg2-bin >/dev/null
    else
        echo "[setup] rsvg-convert is missing; the tests that render SVGs will be skipped. Install it with:"
        echo "        sudo apt-get install librsvg2-bin   (or: brew install librsvg)"
    fi
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# shellcheck disable=SC1091
source .venv/bin/activate

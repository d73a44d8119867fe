#!/usr/bin/env bash
# Run the crafted-file corpus (scripts/attack_corpus.py) under the oldest Keras that setup.cfg
# allows, in a venv of its own, to show that kresnet's refusals do not rest on Keras' fixes.
# The venv reuses .venv's other packages (TensorFlow, h5py, ...) through a .pth file placed
# after its own site-packages, so only Keras is the old one. Usage:
#   bash scripts/corpus-oldest-keras.sh [OUTDIR]      (default: a new temporary folder)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-env.sh"
OLDEST="$(sed -n 's/^ *keras>=\([0-9.]*\).*/\1/p' "$ROOT/setup.cfg")"
VENV="$ROOT/.venv-keras-$OLDEST"
if [ ! -x "$VENV/bin/python" ]; then
    "$ROOT/.venv/bin/python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --no-deps "keras==$OLDEST"
    SITE="$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    OWN="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$SITE" > "$OWN/zz-kresnet-venv.pth"
fi
OUT="${1:-$(mktemp -d)}"
PYTHONPATH="$ROOT" TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" "$ROOT/scripts/attack_corpus.py" "$OUT"

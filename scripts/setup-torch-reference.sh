# Sourced by test.sh (full runs): make .venv-torch, a second venv with torchvision's and timm's
# own ResNets, which tests/test_pytorch.py runs beside kresnet (scripts/torch_reference.py),
# and export KRESNET_TORCH_PYTHON, its Python. It is apart from .venv because PyPI's
# torchvision wants the torch it was built with, a CUDA build of several GB (it runs on the
# CPU): beside .venv's CPU torch 2.13.0, `import torchvision` fails ("operator
# torchvision::nms does not exist"). timm needs torchvision. .venv's uv (setup-env.sh puts it
# there) installs them, taking the wheels from this machine's disk where it keeps them: about
# 20 s for 5.5 GB, where pip took 2 minutes; pip is the fallback. KRESNET_TORCH_REFERENCE=0
# leaves it out (tests/test_pytorch.py's reference tests are then skipped).
if [ "${KRESNET_TORCH_REFERENCE:-1}" != 0 ]; then
    case "$(uname -m)" in
        aarch64) REF_PINS=(torch==2.9.1 torchvision==0.24.1) ;;  # CPU builds there
        *) REF_PINS=(torch==2.14.1 torchvision==0.29.1) ;;
    esac
    REF_PINS+=(timm==1.0.31 safetensors==0.8.0 numpy)
    REF_STAMP=.venv-torch/.kresnet-installed
    if [ ! -f "$REF_STAMP" ] || [ "$(cat "$REF_STAMP")" != "${REF_PINS[*]}" ]; then
        echo "[setup] installing ${REF_PINS[*]} into .venv-torch (torchvision and timm, for the reference tests)"
        [ -x .venv-torch/bin/python ] || "${PYTHON:-python3}" -m venv .venv-torch
        if [ -x .venv/bin/uv ]; then
            # uv reads no pip configuration: pip's find-links are handed on, as in setup-env.sh.
            REF_LINKS=()
            for folder in ${PIP_FIND_LINKS:-$(.venv/bin/python -m pip config get global.find-links 2>/dev/null || true)}; do
                REF_LINKS+=(--find-links "$folder")
            done
            .venv/bin/uv pip install --quiet --compile-bytecode --python .venv-torch/bin/python \
                ${REF_LINKS[@]+"${REF_LINKS[@]}"} "${REF_PINS[@]}"
        else
            .venv-torch/bin/python -m pip install --quiet "${REF_PINS[@]}"
        fi
        echo "${REF_PINS[*]}" > "$REF_STAMP"
    fi
    KRESNET_TORCH_PYTHON="$(pwd)/.venv-torch/bin/python"
    export KRESNET_TORCH_PYTHON
fi

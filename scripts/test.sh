#!/usr/bin/env bash
# Set up (.venv, kresnet[test], Graphviz) and run the whole test suite; extra arguments go to pytest.
# --quick (anywhere among the arguments) runs the quick tier instead, for work in progress:
# every test not marked `slow` (setup.cfg lists the marker; full-size models, fresh
# processes, training, the JAX and PyTorch back ends, export, the benchmark, the demo, the
# memory and kill tests are), in under two minutes rather than the full run's 12-15. It combines with the other
# arguments (bash scripts/test.sh --quick -k naming) but not with a -m of your own, which
# would replace its -m "not slow". With a -k that matches nothing pytest exits 5.
# Two pytest workers (KRESNET_TEST_WORKERS; 0 runs in this process): most tests build, save
# and load models, which is single-threaded Python, so two cores nearly halve the wall time.
# Tests are spread one by one; a file marked xdist_group (module fixtures) stays on one worker.
ARGS=()
QUICK=0
for arg in "$@"; do
    if [ "$arg" = --quick ]; then
        QUICK=1
    else
        ARGS+=("$arg")
    fi
done
source "$(dirname "$0")/setup-env.sh"
if [ "$QUICK" = 0 ]; then
    # torchvision and timm in a venv of their own, for the reference tests of from_torch.
    source scripts/setup-torch-reference.sh
fi
if [ "$QUICK" = 1 ]; then
    ARGS=(-m "not slow" ${ARGS[@]+"${ARGS[@]}"})
fi
WORKERS="${KRESNET_TEST_WORKERS:-2}"
if [ "$WORKERS" != 0 ]; then
    # One thread per worker (TensorFlow's pools, oneDNN's OpenMP): with two workers on two
    # cores, two threads each only contend. With it and the leaner torch reference tests
    # of the same commit, the full run took 12:25 instead of 14:10.
    export TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-1}"
    export TF_NUM_INTEROP_THREADS="${TF_NUM_INTEROP_THREADS:-1}"
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
if [ "$WORKERS" = 0 ]; then
    RUN=(python -m pytest tests kresnet)
else
    RUN=(python -m pytest -n "$WORKERS" --dist loadgroup tests kresnet)
fi
status=0
"${RUN[@]}" ${ARGS[@]+"${ARGS[@]}"} || status=$?
if [ "$status" = 5 ]; then
    echo "scripts/test.sh: no test selected (pytest exit status 5); check -k, -m, --quick" >&2
fi
exit "$status"

#!/usr/bin/env bash
# Set up (.venv, kresnet[test], Graphviz) and run the whole test suite; extra arguments go to pytest.
# Two pytest workers (KRESNET_TEST_WORKERS; 0 runs in this process): most tests build, save
# and load models, which is single-threaded Python, so two cores nearly halve the wall time.
# Tests are spread one by one; a file marked xdist_group (module fixtures) stays on one worker.
source "$(dirname "$0")/setup-env.sh"
WORKERS="${KRESNET_TEST_WORKERS:-2}"
if [ "$WORKERS" = 0 ]; then
    exec python -m pytest tests kresnet "$@"
fi
exec python -m pytest -n "$WORKERS" --dist loadgroup tests kresnet "$@"

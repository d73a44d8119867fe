#!/usr/bin/env bash
# Set up (.venv, kresnet[test], Graphviz) and run the whole test suite; extra arguments go to pytest.
source "$(dirname "$0")/setup-env.sh"
exec python -m pytest tests kresnet "$@"

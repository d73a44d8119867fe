#!/usr/bin/env bash
# Set up (.venv, kresnet[test], Graphviz) and run the main job: build, summarise, plot,
# save, reload in a fresh process, then a short real training run. Outputs go to out/.
source "$(dirname "$0")/setup-env.sh"
exec python scripts/demo.py "$@"

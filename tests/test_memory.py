"""Issue #7's limit: 20 ResNet-50 builds with clear_session between them do not grow memory.

The builds run in a fresh process (forked from a Python that has only imported Keras) so
that other tests' models and caches do not count; it reports its resident set size after
each build (/proc/self/statm on Linux).
"""

import json
import os

import pytest

from tests.conftest import run_in_fresh_process

# Slow (seconds to minutes): left out of `bash scripts/test.sh --quick`.
pytestmark = pytest.mark.slow

BUILDS = 20
LIMIT_MB = 200

CHILD = f"""
import gc, json, os
import keras, kresnet

def rss_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

sizes = []
for _ in range({BUILDS}):
    keras.backend.clear_session()
    model = kresnet.ResNet50()
    assert model.count_params() == 25_636_712
    gc.collect()
    sizes.append(rss_mb())
print(json.dumps(sizes))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads /proc/self/statm")
def test_twenty_resnet50_builds_do_not_grow_memory():
    result = run_in_fresh_process(code=CHILD, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(sizes) == BUILDS
    growth = max(sizes[2:]) - sizes[1]
    assert growth <= LIMIT_MB, (f"RSS grew {growth:.0f} MB after the 2nd build "
                                f"(MB after each build: {[round(s) for s in sizes]})")

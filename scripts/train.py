"""Train a kresnet ResNet on real data: ``kresnet train`` run from a source checkout.

    python scripts/train.py --model resnet18 --config stem=cifar --width 32   # digits, 10 epochs
    python scripts/train.py --out runs/a --resume          # continue a run that was killed

The program is the package ``kresnet.training`` (docs/training.md); this file only runs it
with the checkout's kresnet, so that it works without installing kresnet first.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isdir(os.path.join(ROOT, "kresnet", "training")):
    sys.path.insert(0, ROOT)  # this checkout's kresnet, before any installed one

from kresnet.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="train.py"))

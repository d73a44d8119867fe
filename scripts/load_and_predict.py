"""Load .keras files the way a stranger would and predict: no kresnet import, safe_mode on.

Usage: python scripts/load_and_predict.py MODEL.keras [MODEL.keras ...]
For each file reads MODEL.keras.in.npy, writes the predictions (training=False) to
MODEL.keras.out.npy and the layer names, one per line, to MODEL.keras.names.txt.
"""

import sys

import keras
import numpy as np


def main(paths):
    # Keras walks a functional graph recursively: ResNet-RS-270 ... 420 (about 2,000 layers)
    # need more than Python's default 1,000 frames, in any process that loads them.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for path in paths:
        model = keras.saving.load_model(path, safe_mode=True)
        assert "kresnet" not in sys.modules, "kresnet was imported while loading"
        outputs = model(np.load(f"{path}.in.npy"), training=False)
        np.save(f"{path}.out.npy", keras.ops.convert_to_numpy(outputs))
        with open(f"{path}.names.txt", "w", encoding="utf-8") as names:
            names.write("\n".join(layer.name for layer in model.layers))
        keras.backend.clear_session()


if __name__ == "__main__":
    main(sys.argv[1:])

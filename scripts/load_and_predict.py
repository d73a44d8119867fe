"""Load a .keras file the way a stranger would and predict: no kresnet import, safe_mode on.

Usage: python scripts/load_and_predict.py MODEL.keras INPUT.npy OUTPUT.npy
Writes the predictions (training=False) and prints the layer names, one per line.
"""

import sys

import keras
import numpy as np


def main(model_path, input_path, output_path):
    model = keras.saving.load_model(model_path, safe_mode=True)
    assert "kresnet" not in sys.modules, "kresnet was imported while loading"
    np.save(output_path, np.asarray(model(np.load(input_path), training=False)))
    print("\n".join(layer.name for layer in model.layers))


if __name__ == "__main__":
    main(*sys.argv[1:4])

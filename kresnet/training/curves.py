"""The history of a run as ``history.csv`` text and as the ``curves.png`` picture.

Neither needs TensorFlow; the picture needs matplotlib (in ``kresnet[train]``), which is
imported only when a picture is drawn.
"""

import csv
import io

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def _plain(value):
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else value


def history_csv(history):
    """The rows of ``history`` (dicts, one per epoch) as CSV text.

    >>> print(history_csv([{"epoch": 1, "loss": 0.51234567, "lr": 0.001}]).strip())
    epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds
    1,0.512346,,,,0.001,
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: _plain(row.get(k)) for k in HISTORY_FIELDS})
    return buffer.getvalue()


def figure(history, title=""):
    """Loss, accuracy (training and validation) and learning rate per epoch: a matplotlib
    figure of three panels (close it with ``pyplot.close``). Needs matplotlib.

    The x axes count whole epochs; the learning rate is the one each epoch started with.
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    from matplotlib import pyplot, ticker  # noqa: PLC0415

    epochs = [row["epoch"] for row in history]
    picture, axes = pyplot.subplots(1, 3, figsize=(14, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            values = [row.get(prefix + metric) for row in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker="o", label=label)
        axis.set_ylabel(metric)
        axis.legend()
    rates = [row.get("lr") for row in history]
    if any(r is not None for r in rates):
        axes[2].plot(epochs, rates, marker="o", color="tab:green")
    axes[2].set_ylabel("learning rate (at the epoch's start)")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        if epochs:
            axis.set_xlim(min(epochs) - 0.3, max(epochs) + 0.3)
        axis.grid(alpha=0.3)
    picture.suptitle(title)
    picture.tight_layout()
    return picture


def draw(history, title=""):
    """:func:`figure` as PNG bytes; None when matplotlib is missing.

    >>> png = draw([{"epoch": 1, "loss": 2.0, "accuracy": 0.3, "lr": 1e-3},
    ...             {"epoch": 2, "loss": 1.0, "accuracy": 0.6, "lr": 5e-4}], "demo")
    >>> png is None or png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    try:
        picture = figure(history, title)
    except ImportError:
        return None
    from matplotlib import pyplot  # noqa: PLC0415

    buffer = io.BytesIO()
    try:
        picture.savefig(buffer, format="png", dpi=100)
    finally:
        pyplot.close(picture)
    return buffer.getvalue()

"""What follows the last stage: a classifier head, or pooling alone for feature extraction."""

from keras import layers

from kresnet.config import TUTORIAL_DROPOUT, TUTORIAL_FC_UNITS
from kresnet.naming import HeadNames


def pool(x, pooling, options):
    """``None`` keeps the 4D feature map; ``"avg"``/``"max"`` pool it globally;
    ``"avgmax"`` is the mean of both, ``"catavgmax"`` both side by side (timm's pools)."""
    names = HeadNames(options.name_prefix)
    if pooling is None:
        return x
    pooled = []
    if pooling in ("avg", "avgmax", "catavgmax"):
        pooled.append(layers.GlobalAveragePooling2D(data_format=options.data_format,
                                                    name=names.avg_pool)(x))
    if pooling in ("max", "avgmax", "catavgmax"):
        pooled.append(layers.GlobalMaxPooling2D(data_format=options.data_format,
                                                name=names.max_pool)(x))
    if pooling == "avgmax":
        return layers.Average(name=names.avgmax_pool)(pooled)
    if pooling == "catavgmax":
        return layers.Concatenate(name=names.catavgmax_pool)(pooled)
    return pooled[0]


def fc_head(x, classes, activation, options):
    """Global average pooling and one Dense layer ``fc{classes}`` (``fc1000`` in Caffe)."""
    x = pool(x, "avg", options)
    return options.classifier(x, classes, activation,
                              HeadNames(options.name_prefix).fc(classes))


def tutorial_head(x, classes, activation, options, dropout=TUTORIAL_DROPOUT,
                  fc_units=TUTORIAL_FC_UNITS):
    """``avg_pool``, ``dropout_fc_01``, ``fc_01`` (Dense ``fc_units``, relu),
    ``dropout_fc_final``, ``fc_final`` (Dense ``classes``)."""
    names = HeadNames(options.name_prefix)
    x = pool(x, "avg", options)
    x = layers.Dropout(dropout, name=names.dropout_hidden)(x)
    x = options.dense(x, fc_units, "relu", names.hidden)
    x = layers.Dropout(dropout, name=names.dropout_final)(x)
    return options.classifier(x, classes, activation, names.final)


def build_head(x, config, options):
    """The head of ``config``: ``"tutorial"``, ``"fc"`` or ``None`` (then ``pooling`` applies)."""
    if config.head == "tutorial":
        return tutorial_head(x, config.classes, config.classifier_activation, options,
                             config.dropout, config.fc_units)
    if config.head == "fc":
        return fc_head(x, config.classes, config.classifier_activation, options)
    return pool(x, config.pooling, options)

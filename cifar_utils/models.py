"""Model builders: `build_<arch>(input_shape=(32, 32, 3), num_classes=10, ...) -> keras.Model`.

Every model takes raw pixels in [0, 255] (an input layer named "image"),
optionally augments them (training only), normalises them with
`data.normalization_layer()`, and ends in a dense layer named "logits" and a
float32 softmax named "predictions". Layers are named by stage, so they can be
found by name.

| builder              | idea                                                        |
|----------------------|-------------------------------------------------------------|
| `build_baseline_cnn` | the classic CNN: convolution + ReLU + pooling stages, then   |
|                      | fully connected layers; batch norm and dropout as switches  |
| `build_vgg`          | VGG style: blocks of 3x3 convolutions, pooling, dropout      |
| `build_resnet`       | ResNet-20/32/56 (6n+2 layers) for 32x32 images              |
| `build_resnet9`      | the wide, shallow ResNet-9 of the DAWNBench speed runs      |
"""

from __future__ import annotations

import keras
import numpy as np

from cifar_utils.data import IMAGE_SHAPE, NUM_CLASSES
from cifar_utils.layers import (
    classifier_head,
    conv_bn_act,
    preprocessing,
    residual_block,
    vgg_block,
)


def _check(input_shape, num_classes, halvings, builder):
    """Validates the arguments every builder shares; returns the shape as a tuple."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"{builder}: input_shape must be (height, width, channels) of positive integers; "
            f"received {input_shape!r}."
        )
    if shape[2] not in (1, 3):
        raise ValueError(
            f"{builder}: input_shape must end in 1 (grey) or 3 (RGB) channels, channels last; "
            f"received {input_shape!r}."
        )
    smallest = 2**halvings
    if shape[0] < smallest or shape[1] < smallest:
        raise ValueError(
            f"{builder}: the network halves the image {halvings} times, so height and width "
            f"must be at least {smallest}; received input_shape={input_shape!r}."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"{builder}: num_classes must be an integer >= 2; received {num_classes!r}.")
    return shape


def _check_rate(value, what, builder):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{builder}: {what} must be in [0, 1); received {value!r}.")


def build_baseline_cnn(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    filters=(32, 64, 128),
    dense_units=128,
    batch_norm=True,
    dropout=0.3,
    augmentation=None,
    seed=None,
    name="baseline_cnn",
):
    """The classic CNN: (convolution, ReLU, max pooling) stages, then dense layers.

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        filters: channels of each stage; each stage halves height and width.
            Defaults to (32, 64, 128).
        dense_units: width of the hidden fully connected layer. Defaults to 128.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        dropout: dropout rate after each pooling and before the output layer,
            0 for none. Defaults to 0.3.
        augmentation: in-model augmentation (see `layers.preprocessing`).
            Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to "baseline_cnn".

    Returns:
        A `keras.Model` from images to class probabilities.
    """
    shape = _check(input_shape, num_classes, len(filters), "build_baseline_cnn")
    _check_rate(dropout, "dropout", "build_baseline_cnn")
    inputs = keras.Input(shape=shape, name="image")
    x = preprocessing(inputs, augmentation, seed)
    for i, width in enumerate(filters):
        x = vgg_block(x, width, convs=1, batch_norm=batch_norm, dropout=dropout, name=f"stage{i + 1}")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


def build_vgg(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    widths=(64, 128, 256),
    convs_per_block=2,
    dense_units=256,
    batch_norm=True,
    dropout=0.3,
    augmentation=None,
    seed=None,
    name="vgg",
):
    """A VGG-style network: blocks of 3x3 convolutions, each ending in pooling.

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        widths: channels of each block. Defaults to (64, 128, 256).
        convs_per_block: convolutions per block. Defaults to 2.
        dense_units: width of the hidden fully connected layer. Defaults to 256.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        dropout: dropout rate after each block and before the output layer.
            Defaults to 0.3.
        augmentation: in-model augmentation. Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to "vgg".

    Returns:
        A `keras.Model` from images to class probabilities.
    """
    shape = _check(input_shape, num_classes, len(widths), "build_vgg")
    _check_rate(dropout, "dropout", "build_vgg")
    inputs = keras.Input(shape=shape, name="image")
    x = preprocessing(inputs, augmentation, seed)
    for i, width in enumerate(widths):
        x = vgg_block(
            x, width, convs=convs_per_block, batch_norm=batch_norm, dropout=dropout,
            name=f"block{i + 1}",
        )
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, use_bias=not batch_norm, name="fc")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="fc_bn")(x)
    x = keras.layers.Activation("relu", name="fc_relu")(x)
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


def build_resnet(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    depth=20,
    width=16,
    batch_norm=True,
    augmentation=None,
    seed=None,
    name=None,
):
    """The CIFAR ResNet of He et al. (2015): 6n+2 layers in three stages.

    depth=20 is ResNet-20 (0.27 M parameters), 32 and 56 are deeper members of
    the same family. Stages have `width`, `2*width`, `4*width` channels on
    32x32, 16x16 and 8x8 feature maps, then global average pooling.

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        depth: 6n+2 (20, 32, 44, 56, 110). Defaults to 20.
        width: channels of the first stage. Defaults to 16.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        augmentation: in-model augmentation. Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to None: "resnet{depth}".

    Returns:
        A `keras.Model` from images to class probabilities.
    """
    if not isinstance(depth, (int, np.integer)) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"build_resnet: depth must be 6n+2 (20, 32, 56...); received {depth!r}.")
    shape = _check(input_shape, num_classes, 2, "build_resnet")
    blocks = (depth - 2) // 6
    inputs = keras.Input(shape=shape, name="image")
    x = preprocessing(inputs, augmentation, seed)
    x = conv_bn_act(x, width, batch_norm=batch_norm, name="stem")
    for stage in range(3):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = residual_block(
                x, width * 2**stage, strides=strides, batch_norm=batch_norm,
                name=f"stage{stage + 1}_block{block + 1}",
            )
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def build_resnet9(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    width=64,
    batch_norm=True,
    augmentation=None,
    seed=None,
    name="resnet9",
):
    """ResNet-9 (Page, "How to train your ResNet", 2018): wide, shallow, fast.

    A stem, then three stages that double the channels and halve the size,
    the first and last with a residual block, then global max pooling.

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        width: channels of the stem; stages have 2x, 4x and 8x. Defaults to 64.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        augmentation: in-model augmentation. Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to "resnet9".

    Returns:
        A `keras.Model` from images to class probabilities.
    """
    shape = _check(input_shape, num_classes, 3, "build_resnet9")
    inputs = keras.Input(shape=shape, name="image")
    x = preprocessing(inputs, augmentation, seed)
    x = conv_bn_act(x, width, batch_norm=batch_norm, name="stem")
    for stage, residual in ((1, True), (2, False), (3, True)):
        filters = width * 2**stage
        x = conv_bn_act(x, filters, batch_norm=batch_norm, name=f"stage{stage}")
        x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        if residual:
            x = residual_block(x, filters, batch_norm=batch_norm, name=f"stage{stage}_res")
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


BUILDERS = {
    "baseline_cnn": build_baseline_cnn,
    "vgg": build_vgg,
    "resnet": build_resnet,
    "resnet9": build_resnet9,
}


def build_model(arch, **kwargs):
    """Builds a model by architecture name.

    Args:
        arch: a key of `BUILDERS`.
        **kwargs: passed to the builder.

    Returns:
        The `keras.Model`.
    """
    if arch not in BUILDERS:
        raise ValueError(f"Unknown architecture {arch!r}; known: {', '.join(BUILDERS)}.")
    return BUILDERS[arch](**kwargs)


def _layer_macs(layer) -> int:
    """Multiply-accumulates of one convolution or dense layer for one image."""
    if isinstance(layer, keras.layers.Conv2D):
        out_h, out_w, out_c = layer.output.shape[1:]
        k_h, k_w = layer.kernel_size
        in_c = layer.input.shape[-1] // layer.groups
        return out_h * out_w * out_c * k_h * k_w * in_c
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out_h, out_w, out_c = layer.output.shape[1:]
        k_h, k_w = layer.kernel_size
        return out_h * out_w * out_c * k_h * k_w
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.input.shape[1:])) * layer.units
    return 0


def count_flops(model) -> int:
    """Floating-point operations of one forward pass on one image.

    Counts the convolutions and dense layers, which hold nearly all the
    arithmetic: 2 operations (a multiply and an add) per multiply-accumulate.
    Batch normalisation, activations and pooling (well under 1% here) are
    left out. The test suite checks the count against TensorFlow's profiler.

    Args:
        model: a built functional `keras.Model`.

    Returns:
        The number of FLOPs.
    """
    return 2 * _model_macs(model)


def _model_macs(model) -> int:
    return int(
        sum(
            _model_macs(layer) if isinstance(layer, keras.Model) else _layer_macs(layer)
            for layer in model.layers
        )
    )


def model_stats(models) -> "pandas.DataFrame":  # noqa: F821
    """Parameters and FLOPs of each model, as a table.

    Args:
        models: a list of `keras.Model`.

    Returns:
        A pandas DataFrame indexed by model name with columns "layers",
        "parameters", "trainable parameters", "MFLOPs per image" and
        "size MB (float32)".
    """
    import pandas as pd

    rows = []
    for model in models:
        params = model.count_params()
        rows.append(
            {
                "model": model.name,
                "layers": len(model.layers),
                "parameters": params,
                "trainable parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                "MFLOPs per image": round(count_flops(model) / 1e6, 1),
                "size MB (float32)": round(params * 4 / 1e6, 2),
            }
        )
    return pd.DataFrame(rows).set_index("model")

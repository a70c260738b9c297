"""Layer stacks in the keras-io style: `block(x, filters, ..., name=None) -> x`.

Each function adds named Keras layers to a functional graph and returns the
output tensor. With `name="stage1"` the layers are called "stage1_conv",
"stage1_bn", "stage1_relu", ..., so a summary, a Grad-CAM call or a
fine-tuning recipe can find them by name rather than by position.
"""

from __future__ import annotations

import keras

from cifar_utils.augment import build_augmentation
from cifar_utils.data import normalization_layer


def _sub(name, suffix):
    """The name of a sub-layer, or None (Keras picks one) when the stack has none."""
    return f"{name}_{suffix}" if name else None


def conv_bn_act(
    x, filters, kernel_size=3, strides=1, batch_norm=True, activation="relu", name=None
):
    """Convolution, then batch normalisation, then the activation.

    Args:
        x: input tensor, shape `(batch, height, width, channels)`.
        filters: output channels.
        kernel_size: square kernel side. Defaults to 3.
        strides: stride of the convolution. Defaults to 1.
        batch_norm: add batch normalisation. Defaults to True. With it the
            convolution has no bias, which the normalisation would cancel.
        activation: a Keras activation name, or None. Defaults to "relu".
        name: prefix for the layer names. Defaults to None.

    Returns:
        The output tensor, `filters` channels, same size (divided by `strides`).
    """
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        name=_sub(name, "conv"),
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=_sub(name, "bn"))(x)
    if activation:
        x = keras.layers.Activation(activation, name=_sub(name, activation))(x)
    return x


def vgg_block(x, filters, convs=2, batch_norm=True, dropout=0.0, name=None):
    """`convs` 3x3 convolutions, then 2x2 max pooling and optional dropout.

    Args:
        x: input tensor.
        filters: channels of every convolution in the block.
        convs: number of convolutions. Defaults to 2.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        dropout: dropout rate after pooling, 0 for none. Defaults to 0.0.
        name: prefix for the layer names. Defaults to None.

    Returns:
        The output tensor, half the height and width.
    """
    for i in range(convs):
        x = conv_bn_act(x, filters, batch_norm=batch_norm, name=_sub(name, f"{i + 1}"))
    x = keras.layers.MaxPooling2D(2, name=_sub(name, "pool"))(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=_sub(name, "dropout"))(x)
    return x


def residual_block(x, filters, strides=1, batch_norm=True, name=None):
    """The basic ResNet block: two 3x3 convolutions plus a shortcut, then ReLU.

    The shortcut is the input itself when the shape is unchanged, otherwise a
    1x1 convolution (with batch normalisation) that matches channels and
    stride ("option B" of He et al., 2015).

    Args:
        x: input tensor.
        filters: output channels.
        strides: stride of the first convolution and the shortcut; 2 halves the
            height and width. Defaults to 1.
        batch_norm: batch normalisation after each convolution. Defaults to True.
        name: prefix for the layer names. Defaults to None.

    Returns:
        The output tensor.
    """
    shortcut = x
    y = conv_bn_act(x, filters, strides=strides, batch_norm=batch_norm, name=_sub(name, "1"))
    y = conv_bn_act(y, filters, batch_norm=batch_norm, activation=None, name=_sub(name, "2"))
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn_act(
            x,
            filters,
            kernel_size=1,
            strides=strides,
            batch_norm=batch_norm,
            activation=None,
            name=_sub(name, "shortcut"),
        )
    y = keras.layers.Add(name=_sub(name, "add"))([y, shortcut])
    return keras.layers.Activation("relu", name=_sub(name, "out"))(y)


def preprocessing(x, augmentation=None, seed=None):
    """Optional in-model augmentation, then the normalisation layer.

    Args:
        x: the model's input tensor: pixels in [0, 255].
        augmentation: a policy name for `augment.build_augmentation` (per-image
            policies only), a Keras layer, or None for none. It is active only
            during training. Defaults to None.
        seed: seed for a policy given by name. Defaults to None.

    Returns:
        The normalised tensor.
    """
    if isinstance(augmentation, str):
        augmentation = build_augmentation(augmentation, seed=seed)
    if augmentation is not None:
        x = augmentation(x)
    return normalization_layer(channels=x.shape[-1], name="normalize")(x)


def classifier_head(x, num_classes, dropout=0.0, name="head"):
    """Class scores from features: optional dropout, a dense layer, softmax.

    The dense layer is named "logits" (Grad-CAM and calibration read it) and
    the softmax "predictions". The softmax is float32 even under mixed
    precision, so probabilities and the loss stay accurate.

    Args:
        x: a flat feature tensor, shape `(batch, features)`.
        num_classes: number of classes.
        dropout: dropout rate before the dense layer, 0 for none. Defaults to 0.0.
        name: prefix for the dropout layer. Defaults to "head".

    Returns:
        Probabilities, shape `(batch, num_classes)`.
    """
    if dropout:
        x = keras.layers.Dropout(dropout, name=_sub(name, "dropout"))(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)

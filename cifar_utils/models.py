"""Model builders: `build_<arch>(input_shape=(32, 32, 3), num_classes=10, ...) -> keras.Model`.

Every model takes raw pixels in [0, 255] (an input layer named "image"),
optionally augments them (training only), normalises them with
`data.normalization_layer()`, and ends in a dense layer named "logits" and a
float32 softmax named "predictions". Layers are named by stage, so they can be
found by name. `BUILDERS` maps each architecture's name to its builder:
`BUILDERS["resnet"](depth=32)`.

| builder              | idea                                                        |
|----------------------|-------------------------------------------------------------|
| `build_baseline_cnn` | the classic CNN: convolution + ReLU + pooling stages, then   |
|                      | fully connected layers; batch norm and dropout as switches  |
| `build_vgg`          | VGG style: blocks of 3x3 convolutions, pooling, dropout      |
| `build_resnet`       | ResNet-20/32/56 (6n+2 layers) for 32x32 images              |
| `build_resnet9`      | the wide, shallow ResNet-9 of the DAWNBench speed runs      |
| `build_fast_net`     | the speed-run network of the "fast" recipe (after airbench)  |
"""

from __future__ import annotations

import keras
import numpy as np

from cifar_utils import checks
from cifar_utils.augment import build_augmentation
from cifar_utils.custom_objects import ScaledBias
from cifar_utils.data import IMAGE_SHAPE, NUM_CLASSES, normalize_images
from cifar_utils.layers import (
    classifier_head,
    conv_bn_act,
    preprocessing,
    residual_block,
    vgg_block,
)


def _check_shared(input_shape, num_classes, halvings):
    """Checks the arguments every builder shares; returns `input_shape` as a tuple of ints.

    Args:
        input_shape: `(height, width, channels)`, 1 or 3 channels.
        num_classes: number of classes, at least 2.
        halvings: how often the network halves the image: height and width must
            be at least `2**halvings`.

    Raises:
        ValueError: naming the argument and what was received.
    """
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            "input_shape must be (height, width, channels) of positive integers; "
            f"received {input_shape!r}."
        )
    if shape[2] not in (1, 3):
        raise ValueError(
            "input_shape must end in 1 (grey) or 3 (RGB) channels, channels last; "
            f"received {input_shape!r}."
        )
    smallest = 2**halvings
    if shape[0] < smallest or shape[1] < smallest:
        raise ValueError(
            f"the network halves the image {halvings} times, so height and width "
            f"must be at least {smallest}; received input_shape={input_shape!r}."
        )
    checks.whole_number(num_classes, "num_classes", minimum=2)
    return shape


def _image_input(input_shape, num_classes, halvings, augmentation, seed):
    """The stem every builder starts with, once `_check_shared` has passed its arguments.

    Returns:
        `(inputs, x)`: the `keras.Input` named "image", and `x`, its pixels
        augmented (training only) and normalised by `layers.preprocessing`.
    """
    shape = _check_shared(input_shape, num_classes, halvings)
    inputs = keras.Input(shape=shape, name="image")
    return inputs, preprocessing(inputs, augmentation, seed)


def _flat_stages(x, widths, convs, batch_norm, dropout, name):
    """One `layers.vgg_block` per width, named "`name`1", "`name`2", ..., then "flatten".

    Each block halves the height and width; the result is flat, for dense layers.
    """
    for i, width in enumerate(widths):
        x = vgg_block(
            x, width, convs=convs, batch_norm=batch_norm, dropout=dropout, name=f"{name}{i + 1}"
        )
    return keras.layers.Flatten(name="flatten")(x)


def build_baseline_cnn(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    filters=(32, 64, 128),
    batch_norm=True,
    dense_units=128,
    dropout=0.3,
    augmentation=None,
    seed=None,
    name="baseline_cnn",
):
    """The classic CNN: (convolution, ReLU, max pooling) stages, then dense layers.

    The first network of the course: each stage is one `layers.vgg_block`
    with a single convolution, and a plain ReLU dense layer precedes the head.

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        filters: channels of each stage; each stage halves height and width.
            Defaults to (32, 64, 128).
        batch_norm: batch normalisation after each convolution. Defaults to True.
        dense_units: width of the hidden fully connected layer. Defaults to 128.
        dropout: dropout rate after each pooling and before the output layer,
            0 for none. Defaults to 0.3.
        augmentation: in-model augmentation (see `layers.preprocessing`).
            Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to "baseline_cnn".

    Returns:
        A `keras.Model` from images to class probabilities. Its layers are named
        by stage ("stage1_1_conv", "stage1_pool", ..., "stage3_1_relu"), then
        "flatten", "fc", "logits".
    """
    checks.number(dropout, "dropout", minimum=0, below=1)
    inputs, x = _image_input(input_shape, num_classes, len(filters), augmentation, seed)
    x = _flat_stages(x, filters, 1, batch_norm, dropout, name="stage")
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
        A `keras.Model` from images to class probabilities, its layers named by
        block and convolution: "block1_1_conv", "block1_2_conv", "block1_pool",
        ..., then "fc", "fc_bn", "fc_relu" and "logits".
    """
    checks.number(dropout, "dropout", minimum=0, below=1)
    inputs, x = _image_input(input_shape, num_classes, len(widths), augmentation, seed)
    x = _flat_stages(x, widths, convs_per_block, batch_norm, dropout, name="block")
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
        raise ValueError(f"depth must be 6n+2 (20, 32, 56...); received {depth!r}.")
    blocks = (depth - 2) // 6
    inputs, x = _image_input(input_shape, num_classes, 2, augmentation, seed)
    x = conv_bn_act(x, width, batch_norm=batch_norm, name="stem")
    for stage in range(3):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = residual_block(
                x,
                width * 2**stage,
                strides=strides,
                batch_norm=batch_norm,
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
    inputs, x = _image_input(input_shape, num_classes, 3, augmentation, seed)
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


# Kernel initialisers of build_fast_net. PyTorch's default for Conv2d and Linear is
# kaiming_uniform(a=sqrt(5)): uniform within 1/sqrt(fan_in), variance 1/(3 fan_in).
FAST_NET_INITS = {
    "keras": "glorot_uniform",
    "pytorch": {
        "class_name": "VarianceScaling",
        "config": {"scale": 1 / 3, "mode": "fan_in", "distribution": "uniform"},
    },
}


def _whitening(x, activation, bias):
    """The fast net's first layer, "whiten": a frozen 2x2 convolution, then the activation.

    It has two filters per value of a 2x2 patch (24 for RGB), He-initialised until
    `init_whitening` sets them from the training images. With `bias`, a trainable
    per-filter bias ("whiten_bias") follows the frozen filters: airbench trains it for
    the first epochs only (`callbacks.FreezeLayers`).
    """
    x = keras.layers.Conv2D(
        2 * x.shape[-1] * 4,
        2,
        padding="valid",
        use_bias=not bias,  # without a trainable bias: a frozen zero one, as before it existed
        trainable=False,
        name="whiten",
        kernel_initializer="he_normal",
    )(x)
    if bias:
        x = ScaledBias(1.0, name="whiten_bias")(x)
    return keras.layers.Activation(activation, name=f"whiten_{activation}")(x)


def _fast_conv(x, filters, j, name, pool, kernel_init, momentum, epsilon, bias_scale, activation):
    """The fast net's unit: 3x3 convolution (no bias), (2x2 max pooling), batch norm with
    its scale fixed at 1 (as in airbench) and only its shift learned (its own, or, when
    `bias_scale != 1`, a `ScaledBias` layer after it), then the activation. Layers are
    "`name`_conv`j`", ("`name`_pool"), "`name`_bn`j`", ("`name`_shift`j`"), "`name`_relu`j`"
    ("gelu" for "relu" with `activation="gelu"`)."""
    x = keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=False,
        kernel_initializer=kernel_init,
        name=f"{name}_conv{j}",
    )(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = keras.layers.BatchNormalization(
        momentum=momentum,
        epsilon=epsilon,
        scale=False,
        center=bias_scale == 1,
        name=f"{name}_bn{j}",
    )(x)
    if bias_scale != 1:
        x = ScaledBias(bias_scale, name=f"{name}_shift{j}")(x)
    return keras.layers.Activation(activation, name=f"{name}_{activation}{j}")(x)


def _fast_group(x, filters, convs, name, **unit):
    """One group of the fast net: `_fast_conv` units, the first one pooling.

    With `convs=2` (airbench94 and 95) two units; with `convs=3` (airbench96) a third, and
    the last two become a residual branch added to the first's output ("`name`_add").

    Returns:
        The output tensor: `filters` channels, half the height and width.
    """
    x = _fast_conv(x, filters, 1, name, True, **unit)
    shortcut = x
    for j in range(2, convs + 1):
        x = _fast_conv(x, filters, j, name, False, **unit)
    if convs == 3:
        x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def build_fast_net(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    widths=(64, 256, 256),
    convs=2,
    batch_norm_momentum=0.6,
    batch_norm_epsilon=1e-5,
    logit_scale=1 / 9,
    bias_scale=1.0,
    activation="relu",
    init="keras",
    dirac=False,
    whitening_bias=False,
    whitening_sample=None,
    augmentation=None,
    seed=None,
    name="fast_net",
):
    """The network of the "fast" recipe, after airbench (Jordan, 2024).

    Built for time-to-accuracy: a frozen 2x2 whitening convolution (24
    filters, set from the training images' patch statistics), then three
    groups of (3x3 convolution, 2x2 max pooling, batch norm, ReLU, 3x3
    convolution, batch norm, ReLU), global max pooling, one bias-free dense
    layer and a fixed 1/9 scale on the logits. With `init="pytorch"` and
    `dirac=True` it starts where airbench94 starts; the "fast" recipe adds
    airbench's augmentation, lookahead and multi-crop TTA (see `recipes`).

    Args:
        input_shape: `(height, width, channels)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        widths: channels of the three groups. Defaults to (64, 256, 256).
        convs: 3x3 convolutions per group: 2 (airbench94 and 95), or 3 with a
            residual connection around the last two (airbench96). Defaults to 2.
        batch_norm_momentum: Keras momentum of the moving statistics; 0.6
            follows the fast-changing weights of a short run. Defaults to 0.6.
        batch_norm_epsilon: added to the batch variance before dividing by its
            square root (airbench: 1e-12). Defaults to 1e-5 (Keras's 1e-3 is
            large for batches whose channels vary little).
        logit_scale: multiplies the logits; a small scale keeps early
            predictions soft. Defaults to 1/9.
        bias_scale: batch-norm shifts are `ScaledBias` layers with this scale,
            so under SGD they learn `bias_scale**2` times faster than the
            weights (airbench: 64 times, `bias_scale=8`, as the SGD "fast"
            recipe uses); under Adam only `bias_scale` times.
            Defaults to 1: plain batch-norm shifts.
        activation: "relu" or "gelu" (airbench's; slower on a CPU). Defaults
            to "relu".
        init: "keras" (Keras's defaults: Glorot-uniform kernels) or "pytorch"
            (PyTorch's defaults, as airbench has them: uniform within
            1/sqrt(fan_in), 1.1 to 2.4 times smaller than Keras's here).
            Defaults to "keras".
        dirac: start each group's convolutions as identities (airbench): the
            first `in_channels` filters of every 3x3 convolution pass their
            input channel through, so the deep net starts close to a shallow
            one. Defaults to False.
        whitening_bias: give the frozen whitening filters a trainable bias
            (layer "whiten_bias"), as airbench does; its recipe trains it for
            the first 3 epochs only (`recipes` field `whitening_bias_epochs`).
            Defaults to False.
        whitening_sample: uint8 training images to set the whitening filters
            from (a few thousand suffice). Defaults to None: He-initialised,
            still frozen; call `init_whitening(model, images)` before training.
        augmentation: in-model augmentation. Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to "fast_net".

    Returns:
        A `keras.Model` from images to class probabilities.
    """
    checks.one_of(activation, "activation", ("relu", "gelu"))
    checks.one_of(convs, "convs", (2, 3))
    kernel_init = FAST_NET_INITS[checks.one_of(init, "init", tuple(FAST_NET_INITS))]
    inputs, x = _image_input(input_shape, num_classes, 3, augmentation, seed)
    x = _whitening(x, activation, whitening_bias)
    unit = dict(
        kernel_init=kernel_init,
        momentum=batch_norm_momentum,
        epsilon=batch_norm_epsilon,
        bias_scale=bias_scale,
        activation=activation,
    )
    for i, width in enumerate(widths):
        x = _fast_group(x, width, convs, f"group{i + 1}", **unit)
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    fc = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer=kernel_init, name="fc")
    x = keras.layers.Rescaling(logit_scale, name="logits")(fc(x))
    outputs = keras.layers.Activation("softmax", dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=name)
    if dirac:
        for i in range(len(widths)):
            for j in range(1, convs + 1):
                _dirac(model.get_layer(f"group{i + 1}_conv{j}"))
    if whitening_sample is not None:
        init_whitening(model, whitening_sample)
    return model


def _dirac(layer):
    """Makes the first `in_channels` filters of a square convolution identities (as `dirac_`)."""
    kernel = np.array(layer.kernel.numpy())
    k_h, k_w, channels, filters = kernel.shape
    n = min(channels, filters)
    kernel[:, :, :, :n] = 0.0
    kernel[k_h // 2, k_w // 2, np.arange(n), np.arange(n)] = 1.0
    layer.kernel.assign(kernel)


WHITENING_CHUNK = 250  # images whose patches init_whitening holds at once (about 23 MB)


def init_whitening(model, images, eps=5e-4):
    """Sets the "whiten" layer's filters so its outputs are decorrelated.

    Takes every 2x2 patch of the (normalised) images, computes their 12x12
    covariance, and uses its eigenvectors scaled by 1/sqrt(eigenvalue) as
    filters, each with its negative (24 filters). The first layer then hands
    the network uncorrelated inputs of equal variance, which speeds up early
    training.

    Args:
        model: a model with a 2x2 Conv2D layer named "whiten" after "normalize".
        images: uint8 training images, shape `(N, H, W, C)`; never test images.
        eps: added to the eigenvalues to keep the scale finite. Defaults to 5e-4.

    Returns:
        The model, for chaining.
    """
    layer = model.get_layer("whiten")
    k_h, k_w, channels, filters = layer.kernel.shape
    size = k_h * k_w * channels
    if filters != 2 * size:
        raise ValueError(f"the whitening layer needs 2 x {size} filters; received {filters}.")
    images = np.asarray(images)
    covariance, count = np.zeros((size, size)), 0
    # A few hundred images at a time: all 5,000 images' patches at once, in float64, took
    # over 1 GB, the largest allocation of a whole training run.
    for start in range(0, len(images), WHITENING_CHUNK):
        x = np.asarray(normalize_images(images[start : start + WHITENING_CHUNK]), np.float64)
        patches = np.lib.stride_tricks.sliding_window_view(x, (k_h, k_w), axis=(1, 2))
        # (N, H', W', C, k_h, k_w) -> rows ordered (k_h, k_w, C) like a Keras kernel
        patches = patches.transpose(0, 1, 2, 4, 5, 3).reshape(-1, size)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    scaled = eigenvectors.T / np.sqrt(eigenvalues + eps)[:, None]  # one filter per row
    kernel = np.concatenate([scaled, -scaled]).reshape(filters, k_h, k_w, channels)
    layer.kernel.assign(kernel.transpose(1, 2, 3, 0).astype("float32"))
    return model


TRANSFER_BASES = {
    # name -> (keras.applications constructor, (scale, offset) of its expected input
    # from pixels in [0, 255], smallest input side). A Rescaling layer does what the
    # base's preprocess_input does, so the model loads in safe mode (no Lambda layer).
    # Only networks whose weights Keras downloads with a published hash (`file_hash`: an
    # MD5 digest for these two, a check against a corrupted or swapped file, weaker than
    # SHA-256 against a deliberate forgery) and checks before loading: MobileNetV2's
    # download has none, so it is not offered.
    "mobilenet_v3_small": ("MobileNetV3Small", (1.0, 0.0), 32),  # rescales inside itself
    "efficientnet_b0": ("EfficientNetB0", (1.0, 0.0), 32),  # normalises inside itself
}


def build_transfer(
    input_shape=IMAGE_SHAPE,
    num_classes=NUM_CLASSES,
    base="mobilenet_v3_small",
    weights="imagenet",
    image_size=96,
    trainable_base=False,
    dropout=0.2,
    augmentation=None,
    seed=None,
    name=None,
):
    """A keras.applications network pretrained on ImageNet with a new CIFAR-10 head.

    The 32x32 images are enlarged to `image_size` (ImageNet networks expect
    larger objects), passed through the base network's own preprocessing
    (not `data.normalization_layer`: the base learned on its own scaling),
    pooled, and classified by a new dense layer. With `trainable_base=False`
    only the head learns; unfreeze later to fine-tune.

    Args:
        input_shape: `(height, width, 3)`. Defaults to (32, 32, 3).
        num_classes: number of classes. Defaults to 10.
        base: a key of `TRANSFER_BASES`. Defaults to "mobilenet_v3_small".
        weights: "imagenet" (downloaded once into the Keras cache, needs
            internet the first time; Keras checks the file's MD5 digest against
            the published one and downloads again rather than load a file that
            differs) or None (random weights, to test the code path offline).
            Defaults to "imagenet".
        image_size: side the images are resized to. Defaults to 96.
        trainable_base: let the base network learn too. Defaults to False.
        dropout: dropout before the head. Defaults to 0.2.
        augmentation: in-model augmentation. Defaults to None.
        seed: seed of the augmentation. Defaults to None.
        name: the model's name. Defaults to None: "transfer_{base}".

    Returns:
        A `keras.Model` from images to class probabilities. Downloading the
        weights offline raises the Keras error (`OSError` or `Exception` from
        its download); `notebooks/06` catches it and says so.
    """
    shape = _check_shared(input_shape, num_classes, 0)
    checks.one_of(base, "base", tuple(TRANSFER_BASES))
    if shape[2] != 3:
        raise ValueError(
            f"ImageNet networks need RGB images; received input_shape={input_shape!r}."
        )
    constructor, (scale, offset), smallest = TRANSFER_BASES[base]
    checks.whole_number(image_size, "image_size", minimum=smallest)
    application = getattr(keras.applications, constructor)(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
    )
    application.trainable = trainable_base
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if augmentation is not None:
        x = (
            build_augmentation(augmentation, seed=seed)(x)
            if isinstance(augmentation, str)
            else augmentation(x)
        )
    x = keras.layers.Resizing(image_size, image_size, name="resize")(x)
    x = keras.layers.Rescaling(scale, offset, name="base_preprocess")(x)
    x = application(x, training=False)  # keep the base's batch-norm statistics fixed
    outputs = classifier_head(x, num_classes, dropout=dropout)
    return keras.Model(inputs, outputs, name=name or f"transfer_{base}")


BUILDERS = {
    "baseline_cnn": build_baseline_cnn,
    "vgg": build_vgg,
    "resnet": build_resnet,
    "resnet9": build_resnet9,
    "fast_net": build_fast_net,
}


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


_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")


def _float32_config(obj, key=None):
    """A model config with every mixed dtype policy replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") in _POLICY_CLASSES and isinstance(obj.get("config"), dict):
            return {**obj, "config": {**obj["config"], "name": "float32"}}
        return {k: _float32_config(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_config(v) for v in obj]
    if key == "dtype" and isinstance(obj, str) and obj.startswith("mixed_"):
        return "float32"
    return obj


def computes_in_float32(model) -> bool:
    """Whether every layer of `model` (nested models included) computes in float32.

    Input layers compute nothing; they take the global policy when rebuilt, so they are
    left out.
    """
    return all(
        computes_in_float32(layer)
        if isinstance(layer, keras.Model)
        else layer.dtype_policy.name == "float32"
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    )


def float32_copy(model):
    """The model with float32 arithmetic everywhere, and the same weights.

    A model trained under a mixed-precision policy (`mixed_float16` or
    `mixed_bfloat16` on a GPU) computes in 16 bits, and its saved file says
    so. That is right on the GPU, but TFLite cannot convert 16-bit arithmetic
    and CPUs run it slowly. Exports and shipped models therefore use this
    copy. The weights are float32 under every policy, so nothing is rounded.

    Args:
        model: a functional `keras.Model`.

    Returns:
        A new, uncompiled model with float32 layers and `model`'s weights.
    """
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)  # an uncompiled copy: no optimiser, no loss scaling
    copy = keras.saving.deserialize_keras_object(_float32_config(config))
    copy.set_weights(model.get_weights())
    return copy


def model_stats(models) -> pandas.DataFrame:  # noqa: F821
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

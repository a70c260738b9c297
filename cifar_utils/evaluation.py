"""Evaluating a trained model: predictions, accuracy, test-time augmentation.

Models of this package take raw pixels (uint8 or float in [0, 255]) and
normalise inside, so evaluation feeds the images as they are.
"""

from __future__ import annotations

import numpy as np

from cifar_utils.custom_objects import Temperature
from cifar_utils.data import CLASS_NAMES

TTA_MODES = (False, True, "flip", "multicrop")
"""Values `tta` takes: False (none), True or "flip" (2 passes), "multicrop" (6 passes)."""


def is_tta_mode(tta) -> bool:
    """Whether `tta` is one of `TTA_MODES` (by identity for the booleans, so 1 and 0 are not)."""
    return any(tta is mode or (isinstance(tta, str) and tta == mode) for mode in TTA_MODES)


def _shifted(x, dy, dx):
    """Images moved by (dy, dx) pixels, at most 1, the border reflected (airbench's 1-pixel pad)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    return padded[:, 1 + dy : 1 + dy + x.shape[1], 1 + dx : 1 + dx + x.shape[2]]


def predict_probs(model, x, batch_size=512, tta=False):
    """Class probabilities for images.

    Args:
        model: a Keras model ending in probabilities.
        x: images, shape `(N, H, W, C)`, pixels in [0, 255].
        batch_size: images per prediction step. Defaults to 512.
        tta: test-time augmentation. False: none. True or "flip": average the
            probabilities of each image and its mirror image (2 passes).
            "multicrop": airbench's: half the flip average of the image, half
            the mean of the flip averages of the image shifted by one pixel up
            and left and by one down and right (6 passes). Defaults to False.

    Returns:
        A float32 array of shape `(N, num_classes)`.
    """
    if not is_tta_mode(tta):
        raise ValueError(f"tta must be False, True, 'flip' or 'multicrop'; received {tta!r}.")
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, height, width, channels); received {x.shape}.")

    def flip_average(images):
        probs = model.predict(images, batch_size=batch_size, verbose=0)
        if tta is False:
            return probs
        return (probs + model.predict(images[:, :, ::-1], batch_size=batch_size, verbose=0)) / 2

    probs = flip_average(x)
    if tta == "multicrop":
        shifted = (flip_average(_shifted(x, -1, -1)) + flip_average(_shifted(x, 1, 1))) / 2
        probs = (probs + shifted) / 2
    return probs.astype(np.float32)


def accuracy(model, x, y, batch_size=512, tta=False) -> float:
    """Share of images whose most probable class is the label.

    Args:
        model: a Keras model ending in probabilities.
        x: images, shape `(N, H, W, C)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        batch_size: images per prediction step. Defaults to 512.
        tta: test-time augmentation, as in `predict_probs`. Defaults to False.

    Returns:
        The accuracy, between 0 and 1.
    """
    if len(np.ravel(y)) != len(x):
        raise ValueError(f"x has {len(x)} images but y has {len(np.ravel(y))} labels.")
    return accuracy_from_probs(predict_probs(model, x, batch_size=batch_size, tta=tta), y)


def _labels(y, n):
    y = np.ravel(y).astype(int)
    if len(y) != n:
        raise ValueError(f"{n} predictions but {len(y)} labels.")
    return y


def top_k_accuracy(probs, y, k=5) -> float:
    """Share of images whose label is among the `k` most probable classes.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        k: how many guesses count. Defaults to 5.

    Returns:
        The top-k accuracy, between 0 and 1 (scikit-learn's `top_k_accuracy_score`).
    """
    from sklearn.metrics import top_k_accuracy_score

    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    if not 1 <= k <= probs.shape[1]:
        raise ValueError(f"k must be in 1..{probs.shape[1]}; received {k}.")
    return float(top_k_accuracy_score(y, probs, k=k, labels=np.arange(probs.shape[1])))


def classification_report(probs, y, class_names=None):
    """Per-class precision, recall, F1 and support, with macro and weighted averages.

    scikit-learn's overall "accuracy" entry is a single number, not a row of four; it is
    left out here (a DataFrame would copy it into every column, support included). Use
    `accuracy_from_probs` for it.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels.
        class_names: names in label order. Defaults to None: `data.CLASS_NAMES`.

    Returns:
        A pandas DataFrame from scikit-learn's `classification_report`.
    """
    import pandas as pd
    from sklearn.metrics import classification_report as sk_report

    names = list(class_names or CLASS_NAMES)
    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    report = sk_report(
        y,
        probs.argmax(axis=1),
        labels=np.arange(len(names)),
        target_names=names,
        output_dict=True,
        zero_division=0,
    )
    report.pop("accuracy", None)
    table = pd.DataFrame(report).T
    table["support"] = table["support"].astype(int)
    return table


def confusion_matrix(probs, y, normalize=False, num_classes=None):
    """Counts of (true class, predicted class) pairs.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels.
        normalize: divide each row by its total (each row then shows where the
            images of one class went); False gives counts. Defaults to False.
        num_classes: the matrix size. Defaults to None: `probs.shape[1]`.

    Returns:
        A `(num_classes, num_classes)` array from scikit-learn; rows are true
        classes, columns predictions.
    """
    from sklearn.metrics import confusion_matrix as sk_confusion

    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be True or False; received {normalize!r}.")
    labels = np.arange(num_classes or probs.shape[1])
    return sk_confusion(
        y, probs.argmax(axis=1), labels=labels, normalize="true" if normalize else None
    )


def most_confused_pairs(probs, y, top=5, class_names=None):
    """The (true, predicted) class pairs with the most mistakes.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels.
        top: how many pairs. Defaults to 5.
        class_names: names in label order. Defaults to `data.CLASS_NAMES`.

    Returns:
        A pandas DataFrame with columns "true", "predicted", "count" and
        "share of true class", most mistakes first.
    """
    import pandas as pd

    names = list(class_names or CLASS_NAMES)
    counts = confusion_matrix(probs, y)
    off_diagonal = counts * (1 - np.eye(len(counts), dtype=counts.dtype))
    order = np.argsort(off_diagonal, axis=None)[::-1][:top]
    rows = []
    for flat in order:
        t, p = np.unravel_index(flat, counts.shape)
        if off_diagonal[t, p] == 0:
            break
        rows.append(
            {
                "true": names[t],
                "predicted": names[p],
                "count": int(counts[t, p]),
                "share of true class": counts[t, p] / counts[t].sum(),
            }
        )
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share of true class"])


def misclassified(probs, y, sort="confidence"):
    """Indices of the wrongly classified images.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels.
        sort: "confidence" (the most confident mistakes first) or "index".
            Defaults to "confidence".

    Returns:
        An int array of indices into the evaluated images.
    """
    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    wrong = np.flatnonzero(probs.argmax(axis=1) != y)
    if sort == "confidence":
        return wrong[np.argsort(-probs[wrong].max(axis=1), kind="stable")]
    if sort == "index":
        return wrong
    raise ValueError(f"sort must be 'confidence' or 'index'; received {sort!r}.")


def calibration(probs, y, n_bins=15):
    """Reliability of the confidences: per-bin accuracy against confidence, and ECE.

    The confidence of a prediction is its top probability. Predictions are put
    in `n_bins` equal-width confidence bins; a calibrated model's accuracy in
    each bin equals the bin's mean confidence. The expected calibration error
    (ECE) is the gap between the two, averaged over bins weighted by how many
    predictions fall in each.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        y: labels.
        n_bins: number of confidence bins. Defaults to 15.

    Returns:
        `(ece, bins)`: the ECE (0 is perfect) and a pandas DataFrame with one
        row per non-empty bin: "confidence", "accuracy", "count".
    """
    import pandas as pd

    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1; received {n_bins}.")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        members = which == b
        if members.any():
            rows.append(
                {
                    "confidence": confidence[members].mean(),
                    "accuracy": correct[members].mean(),
                    "count": int(members.sum()),
                }
            )
    bins = pd.DataFrame(rows, columns=["confidence", "accuracy", "count"])
    ece = float(np.sum(bins["count"] / len(y) * np.abs(bins["accuracy"] - bins["confidence"])))
    return ece, bins


def fit_temperature(probs, y) -> float:
    """The temperature that calibrates a model's probabilities best (temperature scaling).

    Finds the `T` whose `apply_temperature(probs, T)` has the lowest cross-entropy
    on these labels (Guo et al., 2017). Fit it on held-out images, the validation split,
    never on the images the model trained on (there it is too confident) nor on the
    test set (which must stay unseen). `T > 1` softens an overconfident model, `T < 1`
    sharpens an underconfident one; the top class, and so the accuracy, never changes.

    Args:
        probs: the model's probabilities on held-out images, shape `(N, num_classes)`.
        y: their labels.

    Returns:
        The temperature, between 0.05 and 20.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"probs must be (N, num_classes) with N >= 1; received {probs.shape}.")
    y = _labels(y, len(probs))
    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    rows = np.arange(len(y))

    def cross_entropy(log_t):
        z = log_p / np.exp(log_t)
        return float(np.mean(logsumexp(z, axis=1) - z[rows, y]))

    # searched over log T, where the loss is smooth and both directions weigh the same
    best = minimize_scalar(cross_entropy, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))


def apply_temperature(probs, temperature):
    """Probabilities rescaled by a temperature: `softmax(log(probs) / temperature)`.

    Args:
        probs: probabilities, shape `(N, num_classes)`.
        temperature: from `fit_temperature`, > 0.

    Returns:
        The calibrated probabilities, same shape; each row sums to one.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; received {temperature!r}.")
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def with_temperature(model, temperature):
    """The model with temperature scaling after its softmax: calibrated probabilities.

    The `Temperature` layer is saved in the `.keras` file and goes into every export,
    so `Classifier`, `cifar-predict` and the web demo show calibrated confidences. A
    model that already ends in one gets its temperature replaced, not a second layer.

        temperature = evaluation.fit_temperature(model.predict(x_val), y_val)
        calibrated = evaluation.with_temperature(model, temperature)

    Args:
        model: a functional Keras model ending in probabilities.
        temperature: from `fit_temperature`.

    Returns:
        A new `keras.Model` sharing the model's layers and weights.
    """
    import keras

    layer = Temperature(temperature, name="temperature")  # checks the value
    model = without_temperature(model)  # replace, do not stack
    # one tensor for a one-input model, so that exports take the image, not a list of one
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, layer(model.outputs[0]), name=model.name)


def without_temperature(model):
    """The model as trained: its last `Temperature` layer taken off (the model itself if none).

        shipped = cifar_utils.load_model("models/fast_net.keras")
        raw = evaluation.without_temperature(shipped)  # to measure or refit the calibration

    Args:
        model: a functional Keras model ending in probabilities.

    Returns:
        A `keras.Model` sharing the model's layers and weights.
    """
    import keras

    if not isinstance(model.layers[-1], Temperature):
        return model
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.layers[-1].input, name=model.name)


def temperature_of(model) -> float:
    """The temperature a model's last layer applies: 1.0 when it has none."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    return last.temperature if isinstance(last, Temperature) else 1.0


def last_conv_layer(model) -> str:
    """Name of the last layer with a spatial (4-D) output: Grad-CAM's default layer."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        if (
            shape is not None
            and len(layer.output.shape) == 4
            and not layer.name.startswith(("augment", "normalize"))
        ):
            return layer.name
    raise ValueError(f"model {model.name!r} has no layer with a 4-D (image-like) output.")


def grad_cam(model, images, layer_name=None, class_index=None, upsample=True):
    """Grad-CAM heatmaps: where in each image the evidence for a class lies.

    Gradients of the class score (the "logits" layer when the model has one,
    else the output) with respect to a convolutional layer's feature maps are
    averaged over space to weight each map; the weighted sum, through a ReLU,
    is upsampled to the image size and scaled to [0, 1] (Selvaraju et al., 2017).
    The map has the layer's resolution (3 x 3 for fast_net's last layer): with
    `upsample=False` it comes back at that resolution, one value per cell, so that a
    figure can show the cells instead of a bilinear blur.

    Args:
        model: a Keras model taking images.
        images: images, shape `(N, H, W, C)`, pixels in [0, 255].
        layer_name: the convolutional layer. Defaults to None: `last_conv_layer`.
        class_index: the class to explain, an int or one per image. Defaults to
            None: each image's predicted class.
        upsample: resize the maps bilinearly to the image size. Defaults to True;
            False returns them at the layer's resolution, shape `(N, h, w)`.

    Returns:
        A float32 array of heatmaps, shape `(N, H, W)` (or `(N, h, w)`), values in [0, 1].
    """
    import keras

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(
            f"images must have shape (N, height, width, channels); received {images.shape}."
        )
    layer_name = layer_name or last_conv_layer(model)
    try:
        feature_layer = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"model {model.name!r} has no layer named {layer_name!r}.") from None
    if len(feature_layer.output.shape) != 4:
        raise ValueError(
            f"layer {layer_name!r} has output shape {feature_layer.output.shape}; "
            "Grad-CAM needs a 4-D one."
        )
    names = [layer.name for layer in model.layers]
    score_output = model.get_layer("logits").output if "logits" in names else model.output
    targets = None
    if class_index is not None:
        targets = np.broadcast_to(np.asarray(class_index), (len(images),)).astype(np.int64)
    features, grads = _features_and_grads(model, feature_layer, score_output, images, targets)
    weights = np.mean(grads, axis=(1, 2), keepdims=True)
    cam = np.maximum(np.sum(weights * features, axis=-1), 0.0)
    if upsample:
        cam = keras.ops.convert_to_numpy(
            keras.ops.image.resize(cam[..., None], images.shape[1:3], interpolation="bilinear")
        )[..., 0]
    peak = np.max(cam, axis=(1, 2), keepdims=True)
    return (cam / np.maximum(peak, 1e-12)).astype(np.float32)


def _features_and_grads(model, feature_layer, score_output, images, targets):
    """`(features, d score / d features)` as float32 arrays, with the backend's gradients."""
    import keras

    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        probe = keras.Model(model.input, [feature_layer.output, score_output])

        # In a tf.function: eager gradients through some oneDNN CPU kernels of TF 2.21
        # crashed the process (ResNet blocks); the traced graph runs them safely.
        @tf.function
        def features_and_grads(x):
            with tf.GradientTape() as tape:
                features, scores = probe(x, training=False)
                scores = tf.cast(scores, tf.float32)
                chosen = tf.argmax(scores, axis=1) if targets is None else targets
                chosen = tf.reduce_sum(scores * tf.one_hot(chosen, tf.shape(scores)[-1]), axis=1)
            return features, tape.gradient(chosen, features)

        features, grads = features_and_grads(tf.constant(images))
    else:
        # JAX and PyTorch differentiate functions, not tapes: split the model at the layer
        # into the part before it and the head after it, and differentiate the head.
        try:
            head = keras.Model(feature_layer.output, score_output)
        except ValueError:
            raise ValueError(
                f"Grad-CAM on {name} needs the layers after {feature_layer.name!r} to depend on "
                "it alone, and they do not: choose a later layer_name, or run on TensorFlow."
            ) from None
        features = keras.Model(model.input, feature_layer.output)(images, training=False)
        features, grads = _head_gradients(name, head, features, targets)
    to_numpy = keras.ops.convert_to_numpy
    return to_numpy(features).astype(np.float32), to_numpy(grads).astype(np.float32)


def _head_gradients(name, head, features, targets):
    """Gradients of the chosen class scores of `head(features)` with respect to `features`."""

    from keras import ops

    def chosen_scores(scores):
        scores = ops.cast(scores, "float32")
        picked = ops.argmax(scores, axis=1) if targets is None else targets
        return ops.sum(scores * ops.one_hot(picked, scores.shape[-1]))  # images are independent

    if name == "jax":
        import jax

        return features, jax.grad(lambda f: chosen_scores(head(f, training=False)))(features)
    import torch

    features = features.detach().requires_grad_(True)
    with torch.enable_grad():
        (grads,) = torch.autograd.grad(chosen_scores(head(features, training=False)), features)
    return features.detach(), grads


def accuracy_from_probs(probs, y) -> float:
    """Accuracy of precomputed probabilities (see `predict_probs`)."""
    probs = np.asarray(probs)
    return float(np.mean(probs.argmax(axis=1) == _labels(y, len(probs))))

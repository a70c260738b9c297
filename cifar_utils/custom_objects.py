"""The package's serializable custom objects, in one small module.

A model built by `cifar_utils.models` can hold four objects Keras does not ship:
`ScaledBias` (a layer of the fast network), `ShiftFlip` (airbench's augmentation as a
layer, when it runs inside the model), `Temperature` (the calibration that
`evaluation.with_temperature` adds) and `PiecewiseLinear` (the learning-rate schedule
its optimiser saves). Each is registered under the name its `.keras` file records
(`cifar_utils>ScaledBias` and so on), and `CUSTOM_OBJECTS`
maps those names to the classes for `storage.load_model`, which passes them to Keras
explicitly. This module imports only Keras, so loading a model imports neither the
augmentation nor the training code. `layers` and `schedules` build with these classes.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cifar_utils")
class ScaledBias(keras.layers.Layer):
    """Adds a learned per-channel bias, stored divided by `scale`.

    `y = x + scale * b`. The gradient of `b` is `scale` times the bias's, so
    under SGD (step = learning rate x gradient) the bias itself moves
    `scale**2` times as far per step as a plain bias would; under Adam, whose
    step does not grow with the gradient's size, only `scale` times.
    airbench trains batch-norm biases 64 times faster than the weights with
    SGD; with `scale=8` one SGD optimiser does the same.

    Args:
        scale: the multiplier. Defaults to 8.0.
        **kwargs: standard layer arguments (name, dtype...).
    """

    def __init__(self, scale=8.0, **kwargs):
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"scale must be positive; received {scale!r}.")
        self.scale = float(scale)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + self.scale * keras.ops.cast(self.bias, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="cifar_utils")
class ShiftFlip(keras.layers.Layer):
    """airbench's augmentation inside the model, compiled with the training step.

    While training, each image is mirrored left-right with probability 1/2, shifted
    by up to `max_shift` whole pixels each way (the uncovered border reflected, as
    airbench pads once by reflection) and, with `cutout`, given a `cutout` x `cutout`
    square of `fill` placed wholly inside it. At inference it passes images through.
    Written in `keras.ops` and `keras.random`, so XLA (JAX, TensorFlow) compiles it
    into the step and it runs where the model runs: on a GPU no batch waits for the
    CPU. Unlike the "airbench" dataset it flips at random, not by alternating flip,
    which needs each image's identity and the epoch that a model step does not see.

        layer = ShiftFlip(max_shift=2, seed=0)
        augmented = layer(images, training=True)  # float pixels, (N, H, W, C)

    Args:
        max_shift: largest shift in pixels, below the image's height and width.
            Defaults to 2 (airbench).
        cutout: side of the square in pixels, 0 for none. Defaults to 0.
        fill: the square's value per channel (e.g. the mean pixel). Defaults to 0.
        seed: seed of the random draws. Defaults to None.
        **kwargs: standard layer arguments (name, dtype...).
    """

    def __init__(self, max_shift=2, cutout=0, fill=(0.0,), seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("max_shift", max_shift), ("cutout", cutout)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0; received {value!r}.")
        self.max_shift, self.cutout, self.seed = max_shift, cutout, seed
        self.fill = tuple(float(v) for v in (fill if hasattr(fill, "__len__") else (fill,)))
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if self.max_shift >= min(height, width) or self.cutout > min(height, width):
            raise ValueError(
                f"max_shift must be below and cutout at most the image size {height} x {width}; "
                f"received max_shift={self.max_shift}, cutout={self.cutout}."
            )

    def call(self, images, training=False):
        if not training:
            return images
        shape = ops.shape(images)
        n, height, width, channels = shape[0], images.shape[1], images.shape[2], images.shape[3]
        seed = self.seed_generator
        flip = keras.random.uniform((n, 1, 1, 1), seed=seed) < 0.5
        images = ops.where(flip, ops.flip(images, axis=2), images)
        if s := self.max_shift:
            padded = ops.pad(images, [[0, 0], [s, s], [s, s], [0, 0]], mode="reflect")
            shifts = keras.random.randint((n, 2), 0, 2 * s + 1, seed=seed)
            rows = shifts[:, :1] + ops.arange(height)[None]  # (n, height): the rows kept
            cols = shifts[:, 1:] + ops.arange(width)[None]
            rows = ops.broadcast_to(rows[:, :, None, None], (n, height, width + 2 * s, channels))
            padded = ops.take_along_axis(padded, rows, axis=1)
            cols = ops.broadcast_to(cols[:, None, :, None], (n, height, width, channels))
            images = ops.take_along_axis(padded, cols, axis=2)
        if side := self.cutout:
            room = ops.convert_to_tensor([height - side + 1, width - side + 1], "float32")
            corners = ops.cast(ops.floor(keras.random.uniform((n, 2), seed=seed) * room), "int32")
            inside_rows = ops.arange(height)[None] - corners[:, :1]
            inside_cols = ops.arange(width)[None] - corners[:, 1:]
            inside_rows = (inside_rows >= 0) & (inside_rows < side)
            inside_cols = (inside_cols >= 0) & (inside_cols < side)
            square = inside_rows[:, :, None, None] & inside_cols[:, None, :, None]
            fill = ops.cast(ops.convert_to_tensor(self.fill), images.dtype)
            images = ops.where(square, fill, images)
        return images

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_shift": self.max_shift,
            "cutout": self.cutout,
            "fill": list(self.fill),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="cifar_utils")
class Temperature(keras.layers.Layer):
    """Temperature scaling of probabilities: `softmax(log(p) / temperature)`.

    The same as dividing the logits by `temperature` before the softmax, so the top
    class never changes: above 1 the probabilities soften (for an overconfident model),
    below 1 they sharpen (for an underconfident one). `evaluation.with_temperature` puts
    it after a model's softmax, so that the fitted temperature travels with the model
    file into every export and every `Classifier`.

    Args:
        temperature: the divisor, > 0.
        **kwargs: standard layer arguments (name, dtype...).
    """

    def __init__(self, temperature=1.0, **kwargs):
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive; received {temperature!r}.")
        self.temperature = float(temperature)

    def call(self, probs):
        probs = ops.cast(probs, "float32")
        return ops.softmax(ops.log(ops.clip(probs, 1e-12, 1.0)) / self.temperature, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="cifar_utils")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate that moves in straight lines between (step, value) points.

    Before the first point it holds the first value, after the last the last.

    Example:

    >>> schedule = PiecewiseLinear([0, 100, 1000], [0.02, 0.2, 0.0])
    >>> [round(float(schedule(step)), 4) for step in (0, 50, 100, 550, 1000, 2000)]
    [0.02, 0.11, 0.2, 0.1, 0.0, 0.0]

    Pass it to an optimiser in place of a constant rate:
    `keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)`.

    Args:
        boundaries: increasing step numbers, at least two.
        values: the learning rate at each boundary, each >= 0.
        name: optional name. Defaults to None.

    Raises:
        ValueError: the lists differ in length or hold fewer than two points, the
            boundaries do not increase, or a value is negative.
    """

    def __init__(self, boundaries, values, name=None):
        boundaries = [float(b) for b in boundaries]
        values = [float(v) for v in values]
        if len(boundaries) < 2 or len(boundaries) != len(values):
            raise ValueError(
                f"boundaries and values need the same length, at least 2; received "
                f"{len(boundaries)} boundaries and {len(values)} values."
            )
        if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])):
            raise ValueError(f"boundaries must increase; received {boundaries}.")
        if any(v < 0 for v in values):
            raise ValueError(f"values must be >= 0; received {values}.")
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        b = ops.convert_to_tensor(self.boundaries, dtype="float32")
        v = ops.convert_to_tensor(self.values, dtype="float32")
        step = ops.clip(ops.cast(step, "float32"), b[0], b[-1])
        # Segment i holds boundaries[i] <= step < boundaries[i + 1].
        i = ops.sum(ops.cast(step >= b[1:-1], "int32"))
        b0, b1 = ops.take(b, i), ops.take(b, i + 1)
        v0, v1 = ops.take(v, i), ops.take(v, i + 1)
        return v0 + (v1 - v0) * (step - b0) / (b1 - b0)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Every custom object a model of this package can hold, under its registered name.
CUSTOM_OBJECTS = {
    f"cifar_utils>{cls.__name__}": cls
    for cls in (ScaledBias, ShiftFlip, Temperature, PiecewiseLinear)
}

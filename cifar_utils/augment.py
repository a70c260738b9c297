"""Named augmentation policies built from Keras preprocessing layers.

A policy is a name, or names joined with "+":

| name          | what it adds                                                          |
|---------------|-----------------------------------------------------------------------|
| "none"        | nothing                                                               |
| "standard"    | horizontal flip + pad-and-crop (a random shift of up to 4 pixels,      |
|               | borders reflected)                                                    |
| "cutout"      | standard + one erased rectangle, each side 10-17 pixels               |
| "randaugment" | standard + RandAugment (2 of Keras's 11 photometric/geometric ops)     |
| "mixup"       | standard + MixUp (blend two images and their labels)                  |
| "cutmix"      | standard + CutMix (paste a patch of another image, mix labels by area) |

So "cutout+mixup" is flip, crop, cutout and MixUp. Layers always run in the
order flip, crop, randaugment, cutout, then mixup or cutmix.

One more policy, "airbench", is not made of layers and does not combine with
the others: airbench's own augmentation (Jordan, 2024), which the "fast"
recipe uses. The images are padded by 2 reflected pixels once; every epoch
each image is cropped back at a random shift of up to 2 pixels, and flipped
by *alternating flip*: a random half of the images is mirrored in even
epochs, exactly the other half in odd ones, so every image is seen both ways
in every two epochs. It needs each image's identity and the epoch, so it runs
as a whole dataset (`alternating_dataset`, which `training_dataset` uses). Inside
the model (`build_augmentation("airbench")`, a `ShiftFlip` layer compiled with
the training step: what `train` uses on a GPU under JAX or PyTorch) the shifts
are the same and the flip is random instead.
"airbench96" is airbench96's variant for longer runs: shifts of up to 4 pixels,
and a 12 x 12 square cut out of every image (filled with the mean pixel).

Every layer works on float pixels in [0, 255], before normalisation, and is
seeded. Per-image layers can live inside the model (`build_augmentation`, so
they run on the GPU) or in the batch pipeline (`pipeline_augment`); either
way they are inactive at inference. MixUp and CutMix also mix the labels, so
they need one-hot labels and run in the pipeline only.

On TensorFlow the pipeline is `tf.data`; on JAX and PyTorch it is NumPy
(`data.ArrayBatches`, and `AlternatingBatches` for "airbench"), whole batches at a
time, never image by image.
"""

from __future__ import annotations

import keras
import numpy as np

from cifar_utils import backend, checks
from cifar_utils.custom_objects import ShiftFlip
from cifar_utils.data import CIFAR10_MEAN, NUM_CLASSES, endless_batches, make_dataset
from cifar_utils.timing import best_time

# Components in the order they are applied.
COMPONENTS = ("flip", "crop", "randaugment", "cutout", "mixup", "cutmix")
LABEL_MIXING = ("mixup", "cutmix")

POLICIES = {
    "none": (),
    "standard": ("flip", "crop"),
    "cutout": ("flip", "crop", "cutout"),
    "randaugment": ("flip", "crop", "randaugment"),
    "mixup": ("flip", "crop", "mixup"),
    "cutmix": ("flip", "crop", "cutmix"),
}

DESCRIPTIONS = {
    "none": "No augmentation: every epoch shows the same images.",
    "standard": "Mirror left-right half the time and shift up to 4 pixels each way, the "
    "uncovered border filled by reflection: the object can appear anywhere, facing either way.",
    "cutout": "Also erase a rectangle of the image (sides of 10-17 pixels): the model "
    "cannot rely on one part (a face, a wheel) alone.",
    "randaugment": "Also apply two random changes (contrast, rotation, shear, "
    "solarise, ...): robustness to lighting and viewpoint.",
    "mixup": "Also blend pairs of images and their labels: softer decision "
    "boundaries, better calibrated confidences.",
    "cutmix": "Also paste a patch from another image, labels mixed by area: the "
    "benefits of cutout without wasting pixels.",
}

# "Pad-and-crop": a random shift of up to 4 of 32 pixels each way. The ResNet paper pads 4
# zero pixels and crops a random 32 x 32 window; this is a translation (RandomTranslation)
# whose uncovered border is filled by reflecting the image, so no black frame appears.
MAX_SHIFT_FRACTION = 4 / 32
# Cutout: a rectangle whose width and height are each drawn as sqrt(U(0.1, 0.3)) of the
# image's (Keras's RandomErasing), so sides of 10-17 pixels on 32 x 32, about the 16 x 16
# patch DeVries & Taylor found best on CIFAR-10; filled with the mean pixel so that the
# erased area becomes 0 after normalisation.
CUTOUT_AREA = (0.1, 0.3)
MEAN_PIXEL = tuple(255.0 * m for m in CIFAR10_MEAN)
RANDAUGMENT_OPS = 2  # ops per image
RANDAUGMENT_FACTOR = 0.3  # strength, 0 to 1; Keras's 0.5 often leaves 32x32 images unrecognisable
# airbench's shift: at most 2 pixels each way (the classic recipes' 4 removes more of a
# 32-pixel image than a short run can afford), from a 2-pixel reflect padding made once.
AIRBENCH_SHIFT = 2
EPOCH_POLICIES = {
    "airbench": "Shift up to 2 pixels each way (borders reflected) and mirror by alternating "
    "flip: each image is mirrored in every other epoch, so every two epochs show both views.",
    "airbench96": "As airbench, with shifts of up to 4 pixels and a 12 x 12 square cut out "
    "of every image: more variety for a wider network trained four times longer.",
}
# Each epoch policy's (largest shift, side of the cut-out square; 0 for none), in pixels.
EPOCH_POLICY_SETTINGS = {"airbench": (AIRBENCH_SHIFT, 0), "airbench96": (4, 12)}
AUGMENT_DTYPE = "float32"  # pixels stay float32 in [0, 255] through augmentation
MIXUP_ALPHA = 0.2  # Beta(alpha, alpha) mixing weights; small alpha: mostly one image
CUTMIX_FACTOR = 1.0  # Beta(1, 1) patch area: uniform


def parse_policy(augmentation: str) -> tuple[str, ...]:
    """Turns a policy name into its components, in the order they run.

    Args:
        augmentation: a name from `POLICIES`, or several joined with "+".

    Returns:
        A tuple of component names from `COMPONENTS`.
    """
    if not isinstance(augmentation, str) or not augmentation.strip():
        raise ValueError(
            "policy must be a name such as 'standard' or 'cutout+mixup'; "
            f"received {augmentation!r}. "
            f"Known names: {', '.join(POLICIES)}, {', '.join(EPOCH_POLICIES)}."
        )
    if augmentation.strip().lower() in EPOCH_POLICIES:
        return (augmentation.strip().lower(),)
    wanted = set()
    for part in augmentation.split("+"):
        part = part.strip().lower()
        if part in EPOCH_POLICIES:
            raise ValueError(
                f"policy {part!r} in {augmentation!r} works on whole epochs and combines with "
                "no other policy; use it alone."
            )
        if part not in POLICIES:
            raise ValueError(
                f"Unknown augmentation policy {part!r} in {augmentation!r}. "
                f"Known names: {', '.join(POLICIES)} (join several with '+'), or "
                f"{', '.join(EPOCH_POLICIES)} alone."
            )
        wanted.update(POLICIES[part])
    if set(LABEL_MIXING) <= wanted:
        raise ValueError(f"policy {augmentation!r} asks for both MixUp and CutMix; choose one.")
    return tuple(c for c in COMPONENTS if c in wanted)


def _make_layer(component: str, seed):
    # float32 whatever Keras's global policy: under mixed_bfloat16 (a GPU, or a CPU with
    # bfloat16 instructions) the layers would otherwise compute in bfloat16, and CutMix and
    # MixUp then fail to mix bfloat16 images with float32 weights.
    common = {"seed": seed, "dtype": AUGMENT_DTYPE}
    if component == "flip":
        return keras.layers.RandomFlip("horizontal", name="flip", **common)
    if component == "crop":
        # Nearest-neighbour sampling keeps shifts whole pixels, so images stay sharp.
        shift = MAX_SHIFT_FRACTION
        return keras.layers.RandomTranslation(
            shift,
            shift,
            fill_mode="reflect",
            interpolation="nearest",
            name="pad_and_crop",
            **common,
        )
    if component == "randaugment":
        ops, factor = RANDAUGMENT_OPS, RANDAUGMENT_FACTOR
        return keras.layers.RandAugment((0, 255), ops, factor, name="randaugment", **common)
    if component == "cutout":  # the whole patch, filled with the mean pixel
        if backend.is_tensorflow():
            return keras.layers.RandomErasing(
                (1.0, 1.0), CUTOUT_AREA, MEAN_PIXEL, value_range=(0, 255), name="cutout", **common
            )
        # Keras 3.15's RandomErasing cannot fill with one value per channel on JAX or PyTorch
        # (their full_like refuses the tuple): erase to 0 around the mean pixel instead.
        return keras.Sequential(
            [
                keras.layers.Rescaling(1.0, offset=[-m for m in MEAN_PIXEL], dtype=AUGMENT_DTYPE),
                keras.layers.RandomErasing(
                    (1.0, 1.0), CUTOUT_AREA, 0.0, value_range=(-255, 255), **common
                ),
                keras.layers.Rescaling(1.0, offset=list(MEAN_PIXEL), dtype=AUGMENT_DTYPE),
            ],
            name="cutout",
        )
    if component == "mixup":
        return keras.layers.MixUp(alpha=MIXUP_ALPHA, name="mixup", **common)
    if component == "cutmix":
        return keras.layers.CutMix(
            factor=CUTMIX_FACTOR, seed=seed, dtype=AUGMENT_DTYPE, name="cutmix"
        )
    if component in EPOCH_POLICIES:
        raise ValueError(
            f"policy {component!r} needs each image's epoch, so it is not a batch hook; train "
            f"with augment.training_dataset(x, y, augmentation={component!r}) instead, or put "
            f"build_augmentation({component!r}) (random flips, not alternating) in the model."
        )
    raise ValueError(f"Unknown component {component!r}; known: {COMPONENTS}.")


def augmentation_layers(augmentation: str, seed: int | None = None) -> list:
    """Creates the Keras layers of a policy.

    Args:
        augmentation: a policy name, e.g. "standard" or "cutout+mixup".
        seed: base seed; layer i gets `seed + i`, so the layers draw independent
            random numbers and the whole policy repeats with the same seed.
            Defaults to None (unseeded).

    Returns:
        A list of Keras preprocessing layers, in the order they run.
    """
    return [
        _make_layer(component, None if seed is None else seed + i)
        for i, component in enumerate(parse_policy(augmentation))
    ]


def build_augmentation(
    augmentation: str = "standard", seed: int | None = None, name="augmentation"
):
    """Builds a policy as a layer to put inside a model (runs on the GPU).

    Active only while training (`model.fit`); `model.predict` and
    `model(x, training=False)` pass images through unchanged.

    Args:
        augmentation: a policy without MixUp or CutMix, which need labels. Defaults to
            "standard". "airbench" and "airbench96" give a `ShiftFlip` layer: their
            shifts (and square), compiled with the step, with random flips in place
            of alternating flip (a layer does not know the epoch or the image).
        seed: base seed. Defaults to None.
        name: the layer's name. Defaults to "augmentation".

    Returns:
        A `keras.Sequential` of the policy's layers (an `Identity` layer for "none", a
        `ShiftFlip` for an epoch policy).
    """
    components = parse_policy(augmentation)
    if components and components[0] in EPOCH_POLICY_SETTINGS:
        max_shift, cutout = EPOCH_POLICY_SETTINGS[components[0]]
        return ShiftFlip(max_shift, cutout, MEAN_PIXEL, seed=seed, dtype=AUGMENT_DTYPE, name=name)
    mixing = [c for c in components if c in LABEL_MIXING]
    if mixing:
        raise ValueError(
            f"policy {augmentation!r} includes {mixing[0]}, which mixes labels and so cannot run "
            "inside the model; use pipeline_augment(augmentation) as make_dataset's augment_fn= "
            "(with num_classes set for one-hot labels)."
        )
    if not components:
        return keras.layers.Identity(name=name)
    return keras.Sequential(augmentation_layers(augmentation, seed), name=name)


def has_model_form(augmentation: str) -> bool:
    """Whether `train` can move a policy into the model, compiled with the step: the epoch
    policies ("airbench", "airbench96"), whose `ShiftFlip` layer is written in `keras.ops`."""
    policy = parse_policy(augmentation)
    return bool(policy) and policy[0] in EPOCH_POLICY_SETTINGS


def pipeline_augment(augmentation: str = "standard", seed: int | None = None):
    """Builds a policy as the `augment_fn=` hook of `data.make_dataset`.

    Args:
        augmentation: any policy. With "mixup" or "cutmix" the dataset must have
            one-hot labels (`make_dataset(..., num_classes=10)`).
        seed: base seed. Defaults to None.

    Returns:
        A function `(images, labels) -> (images, labels)` for batches of float
        pixels in [0, 255]; it always augments (use it for training data only).
    """
    layers = augmentation_layers(augmentation, seed)
    mixes = any(layer.name in LABEL_MIXING for layer in layers)

    def augment(images, labels):
        dtype = keras.backend.standardize_dtype(labels.dtype)
        if mixes and (len(labels.shape) != 2 or "int" in dtype):
            raise ValueError(
                f"policy {augmentation!r} mixes labels, which must be one-hot floats of shape "
                f"(batch, num_classes); received {dtype} labels of shape "
                f"{tuple(labels.shape)}. Pass num_classes=10 to make_dataset."
            )
        for layer in layers:
            if layer.name in LABEL_MIXING:
                mixed = layer({"images": images, "labels": labels}, training=True)
                images, labels = mixed["images"], mixed["labels"]
            else:
                images = layer(images, training=True)
        return images, labels

    augment.augmentation = augmentation
    return augment


def measure_throughput(augmentation, x, y, batch_size=256, batches=20, seed=0):
    """Measures how many images per second a policy augments in the batch pipeline.

    Runs `make_dataset(..., augment_fn=pipeline_augment(augmentation))` over `batches`
    batches after one warm-up batch (which traces the graph), on this machine
    (`timing.best_time`).

    Args:
        augmentation: a policy name.
        x: uint8 images, shape `(N, 32, 32, 3)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        batch_size: images per batch. Defaults to 256.
        batches: batches timed. Defaults to 20.
        seed: seed of the policy. Defaults to 0.

    Returns:
        Images per second (float).
    """
    batches = checks.whole_number(batches, "batches", minimum=1)
    ds = training_dataset(x, y, augmentation, batch_size=batch_size, seed=seed, drop_remainder=True)
    iterator = endless_batches(ds)

    def run_batches():
        for _ in range(batches):
            images, _ = next(iterator)
        keras.ops.convert_to_numpy(images)  # wait for the last batch

    next(iterator)  # warm-up: tracing and the first batch (one batch, not a whole timed run)
    return batches * batch_size / best_time(run_batches, repeats=1, warmup=0)


def training_dataset(x, y, augmentation="standard", batch_size=128, seed=0, drop_remainder=False):
    """The shuffled, augmented, one-hot batches every training run reads.

    The one place that turns a policy name into `data.make_dataset`'s `augment_fn=` hook
    ("none" adds no hook at all).

    Args:
        x: uint8 training images, shape `(N, 32, 32, 3)`.
        y: their labels, shape `(N,)` or `(N, 1)`.
        augmentation: a policy name (see the table above). Defaults to "standard".
        batch_size: images per batch. Defaults to 128.
        seed: seed of the shuffling and the augmentation. Defaults to 0.
        drop_remainder: drop the last, smaller batch. Defaults to False.

    Returns:
        Batches of `(float32 images in [0, 255], one-hot labels)`: on TensorFlow a
        `tf.data.Dataset` of one epoch, or, for "airbench", endless epochs (fit with
        `steps_per_epoch`; `data.is_endless` tells); on JAX and PyTorch a
        `keras.utils.PyDataset` of one epoch (see `alternating_dataset`).
    """
    policy = parse_policy(augmentation)
    if policy and policy[0] in EPOCH_POLICY_SETTINGS:
        max_shift, cutout = EPOCH_POLICY_SETTINGS[policy[0]]
        return alternating_dataset(
            x,
            y,
            batch_size=batch_size,
            seed=seed,
            max_shift=max_shift,
            cutout=cutout,
            drop_remainder=drop_remainder,
        )
    hook = pipeline_augment(augmentation, seed=seed) if parse_policy(augmentation) else None
    one_hot = NUM_CLASSES  # one-hot labels, so that MixUp and CutMix can mix them
    return make_dataset(
        x, y, batch_size, True, seed, hook, num_classes=one_hot, drop_remainder=drop_remainder
    )


def alternating_dataset(
    x, y, batch_size=256, seed=0, max_shift=AIRBENCH_SHIFT, cutout=0, drop_remainder=True
):
    """airbench's augmentation as seeded batches: shift, alternating flip (and cutout).

    The images are padded by `max_shift` reflected pixels once (uint8, kept in
    memory). Epoch `e` reshuffles them, crops each back to its size at a random
    shift of up to `max_shift` pixels each way, and mirrors image `i` when
    `first_flip[i] != (e is odd)`: half the images in even epochs and exactly the
    other half in odd ones. airbench reports alternating flip worth about as much
    as a few percent more epochs; the shift of 2 is its choice for short runs.

    Args:
        x: uint8 training images, shape `(N, H, W, C)`.
        y: their labels, shape `(N,)` or `(N, 1)`.
        batch_size: images per batch. Defaults to 256.
        seed: seed of the order, the shifts and the first epoch's flips. Defaults to 0.
        max_shift: largest shift in pixels. Defaults to 2.
        cutout: side in pixels of a square, placed at random inside each image, set
            to the mean pixel after the shift and flip (airbench96: 12); 0 for none.
            Defaults to 0.
        drop_remainder: drop each epoch's last, smaller batch. Defaults to True.

    Returns:
        On TensorFlow, an endless `tf.data.Dataset` of `(float32 images in [0, 255],
        one-hot labels)` batches, epoch after epoch: pass `steps_per_epoch=len(x) //
        batch_size` to fit. On JAX and PyTorch, an `AlternatingBatches` of one epoch
        that moves to the next epoch when `fit` ends one (`on_epoch_end`).
    """
    x = np.asarray(x)
    y = np.ravel(np.asarray(y))
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ValueError(
            f"x must be uint8 images of shape (N, H, W, C); received {x.dtype} {x.shape}."
        )
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"need as many labels as images, at least one; received {len(x)} and {len(y)}."
        )
    max_shift = checks.whole_number(max_shift, "max_shift")
    if max_shift >= min(x.shape[1:3]):
        raise ValueError(f"max_shift must be below the image size; received {max_shift!r}.")
    cutout = checks.whole_number(cutout, "cutout", maximum=min(x.shape[1:3]))
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=1)
    drop_remainder = drop_remainder and len(x) >= batch_size
    if not backend.is_tensorflow():
        return AlternatingBatches(x, y, batch_size, seed, max_shift, cutout, drop_remainder)
    import tensorflow as tf

    n, height, width = len(x), x.shape[1], x.shape[2]
    s = max_shift
    padded = tf.constant(np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect") if s else x)
    labels = tf.one_hot(tf.constant(y.astype(np.int32)), NUM_CLASSES)
    first_flip = tf.constant(np.random.default_rng(seed).random(n) < 0.5)
    rows, cols = tf.range(height, dtype=tf.int64), tf.range(width, dtype=tf.int64)

    def load(epoch, batch_index, indices):
        images = tf.gather(padded, indices)
        shifts = tf.random.stateless_uniform(
            [tf.size(indices), 2],
            seed=tf.stack([seed * 1_000_003 + epoch, batch_index]),
            minval=0,
            maxval=2 * s + 1,
            dtype=tf.int64,
        )
        images = tf.gather(images, shifts[:, :1] + rows[None], axis=1, batch_dims=1)
        images = tf.gather(images, shifts[:, 1:] + cols[None], axis=2, batch_dims=1)
        flip = tf.not_equal(tf.gather(first_flip, indices), tf.equal(epoch % 2, 1))
        images = tf.where(flip[:, None, None, None], tf.reverse(images, [2]), images)
        images = tf.cast(images, tf.float32)
        if cutout:  # a square wholly inside the image, as airbench's batch_cutout
            where = tf.random.stateless_uniform(
                [tf.size(indices), 2], seed=tf.stack([seed * 1_000_003 + epoch, -1 - batch_index])
            )  # in [0, 1), scaled to the corners' ranges
            room = tf.constant([height - cutout + 1, width - cutout + 1], tf.float32)
            corners = tf.cast(tf.floor(where * room), tf.int64)
            inside_rows = (rows[None] >= corners[:, :1]) & (rows[None] < corners[:, :1] + cutout)
            inside_cols = (cols[None] >= corners[:, 1:]) & (cols[None] < corners[:, 1:] + cutout)
            square = inside_rows[:, :, None, None] & inside_cols[:, None, :, None]
            images = tf.where(square, tf.constant(MEAN_PIXEL, tf.float32), images)
        return images, tf.gather(labels, indices)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([seed, epoch])))
        batches = tf.data.Dataset.from_tensor_slices(order).batch(
            batch_size, drop_remainder=drop_remainder
        )
        return batches.enumerate().map(
            lambda i, indices: load(epoch, i, indices),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    endless = tf.data.Dataset.counter().flat_map(one_epoch)
    # flat_map hides that the stream never ends; say so, so that fit is given steps_per_epoch.
    endless = endless.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return endless.prefetch(tf.data.AUTOTUNE)


class AlternatingBatches(keras.utils.PyDataset):
    """`alternating_dataset` in NumPy, for backends without `tf.data`: one epoch a pass.

    Each batch is cut from the padded images by one fancy index (shifts of up to
    `max_shift` pixels), mirrored by alternating flip and, with `cutout`, given its mean
    square: whole batches, no Python loop over images. `fit` calls `on_epoch_end`, which
    draws the next epoch's order, shifts and squares and flips the other half. Build it
    with `alternating_dataset` (which checks the arguments). Keras's `fit` reads one batch
    and calls `on_epoch_end` before its first epoch, so training starts at the second draw:
    every epoch is still a new order, new shifts and the other half flipped.
    """

    def __init__(self, x, y, batch_size, seed, max_shift, cutout, drop_remainder):
        super().__init__()
        s = max_shift
        self.padded = np.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect") if s else x
        self.labels = np.eye(NUM_CLASSES, dtype=np.float32)[y.astype(np.int64)]
        self.batch_size, self.max_shift, self.cutout = batch_size, max_shift, cutout
        self.drop_remainder = drop_remainder
        self.size = x.shape[1:3]
        self._rng = np.random.default_rng(seed)
        self.first_flip = self._rng.random(len(x)) < 0.5
        self.epoch, self._served = -1, True
        self.on_epoch_end()  # draws epoch 0

    def __len__(self):
        n = len(self.labels)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        self._served = True
        indices = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        (height, width), shifts = self.size, self._shifts[indices]
        rows = shifts[:, 0, None] + np.arange(height)
        cols = shifts[:, 1, None] + np.arange(width)
        images = self.padded[indices[:, None, None], rows[:, :, None], cols[:, None, :]]
        flip = self.first_flip[indices] != (self.epoch % 2 == 1)
        images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
        images = images.astype(np.float32)
        if self.cutout:
            top, left = self._corners[indices].T
            inside_rows = (np.arange(height) >= top[:, None]) & (
                np.arange(height) < top[:, None] + self.cutout
            )
            inside_cols = (np.arange(width) >= left[:, None]) & (
                np.arange(width) < left[:, None] + self.cutout
            )
            square = inside_rows[:, :, None] & inside_cols[:, None, :]
            images[square] = MEAN_PIXEL
        return images, self.labels[indices]

    def on_epoch_end(self):
        if not self._served:
            return  # no batch read since the last draw: nothing to move on from
        self._served = False
        n, (height, width) = len(self.labels), self.size
        self.epoch += 1
        self._order = self._rng.permutation(n)
        self._shifts = self._rng.integers(0, 2 * self.max_shift + 1, (n, 2))
        room = (height - self.cutout + 1, width - self.cutout + 1)
        self._corners = self._rng.integers(0, room, (n, 2)) if self.cutout else None

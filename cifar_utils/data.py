"""CIFAR-10 loading, splitting and batch pipelines (`tf.data` on TensorFlow).

Where `load_cifar10` looks for the data, in order:

1. the explicit `data_dir` argument;
2. the environment variable `CIFAR10_DIR`;
3. an extracted copy in the Keras cache left by an earlier
   `keras.datasets.cifar10.load_data()` (`$KERAS_HOME/datasets` or
   `~/.keras/datasets`);
4. `keras.datasets.cifar10.load_data()` itself, which downloads when online.

A folder is accepted when it holds the official python-version batch files
(`data_batch_1` .. `data_batch_5`, `test_batch`) or a `cifar-10-batches-py/`
sub-folder that does. The files are pickles; `batch_files.read_batch` reads
each one with a restricted unpickler that can only rebuild numpy arrays, so a
crafted file cannot run code.

Pixels stay `uint8` until a batch is formed: `make_dataset` gathers a batch
and casts it to float32 in [0, 255]. Scaling is defined in one place,
`normalization_layer()`: the models put it after their input, so they take
raw pixels; `normalize_images` computes the same outside a model.

On TensorFlow the batches come from a `tf.data` pipeline; on JAX and PyTorch (where
TensorFlow may not be installed) from `ArrayBatches`, a `keras.utils.PyDataset` over the
same uint8 arrays with the same arguments. Both feed `model.fit` alike; to loop over
either without end, use `endless_batches`.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cifar_utils import backend, checks, paths
from cifar_utils.batch_files import (
    FIX_HINT,
    IMAGES_PER_BATCH,
    TEST_FILE,
    TRAIN_FILES,
    CIFAR10DataError,
    CIFAR10NotFoundError,
    read_batch,
)

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (32, 32, 3)

# Per-channel mean and standard deviation of the official training set, on
# pixels scaled to [0, 1]. The offline copy measures (0.4913, 0.4821, 0.4465)
# and (0.2452, 0.2428, 0.2606): close enough that one set of constants serves
# both, and models trained on one work on the other.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ENV_VAR = paths.DATA_DIR_ENV_VAR
# The data variant printed next to every accuracy (`DataSource.variant`).
OFFLINE_COPY = "offline copy"
OFFICIAL = "official"
BATCH_DIRNAME = "cifar-10-batches-py"

# sha256 of `test_batch` written by ../shared/data/build_cifar10.py (see its
# SOURCE.md). Matching it means the pixels are the JPEG re-encoded offline copy,
# and accuracies measured on it must say "offline copy".
OFFLINE_COPY_TEST_SHA256 = "5e3224972afcab1476774de0e7182de467a4713abf3630ea5aab66a9d55c56a8"


@dataclass(frozen=True)
class DataSource:
    """Where the data was found.

    Attributes:
        kind: one of `"data_dir"`, `"env"`, `"keras_cache"`, `"keras_download"`.
        path: the folder holding the batch files (None for a Keras download that
            has not happened yet).
    """

    kind: str
    path: Path | None

    def describe(self) -> str:
        """Returns a one-line description, e.g. for a notebook."""
        where = {
            "data_dir": "the folder given as data_dir",
            "env": f"${ENV_VAR}",
            "keras_cache": "the Keras dataset cache",
            "keras_download": "keras.datasets.cifar10.load_data() (download)",
        }[self.kind]
        return f"{where}: {paths.display_path(self.path)}" if self.path is not None else where

    @functools.cached_property
    def variant(self) -> str:
        """`OFFLINE_COPY` ("offline copy") when the files are the JPEG re-encoded offline
        copy (its test file's checksum), else `OFFICIAL` ("official"): the label to print
        next to every accuracy measured on this data."""
        return OFFLINE_COPY if self.path is not None and is_offline_copy(self.path) else OFFICIAL

    def describe_variant(self) -> str:
        """`variant` with what is known about it, as `load_cifar10` prints it."""
        if self.variant == OFFLINE_COPY:
            return f"{OFFLINE_COPY}, JPEG re-encoded"
        if self.kind in ("keras_cache", "keras_download"):
            return f"{OFFICIAL} files"
        return f"{OFFICIAL} layout; not the known {OFFLINE_COPY}"


def _keras_cache_dirs() -> list[Path]:
    home = paths.keras_home()
    datasets = home / "datasets"
    # Keras 3 extracts to `cifar-10-batches-py-target/cifar-10-batches-py`,
    # Keras 2 to `cifar-10-batches-py`.
    return [datasets / "cifar-10-batches-py-target" / BATCH_DIRNAME, datasets / BATCH_DIRNAME]


def _batch_folder(folder: Path) -> Path | None:
    """Returns the folder holding the batch files, or None if there is none."""
    for candidate in (folder, folder / BATCH_DIRNAME):
        if (candidate / TRAIN_FILES[0]).exists() or (candidate / TEST_FILE).exists():
            return candidate
    return None


def _resolve_given(folder: str | os.PathLike, kind: str) -> DataSource:
    folder = Path(folder).expanduser()
    label = "data_dir" if kind == "data_dir" else f"${ENV_VAR}"
    if not folder.is_dir():
        raise CIFAR10NotFoundError(f"{label} = {folder} is not a folder. {FIX_HINT}")
    found = _batch_folder(folder)
    if found is None:
        listing = sorted(p.name for p in folder.iterdir())[:10]
        raise CIFAR10NotFoundError(
            f"{label} = {folder} holds no CIFAR-10 batch files (expected data_batch_1..5 and "
            f"test_batch, or a {BATCH_DIRNAME}/ folder with them; found {listing}). {FIX_HINT}"
        )
    return DataSource(kind, found)


def locate_cifar10(data_dir: str | os.PathLike | None = None) -> DataSource:
    """Finds where CIFAR-10 will be loaded from, without reading it.

    Args:
        data_dir: a folder holding the batch files or a `cifar-10-batches-py/`
            sub-folder. Defaults to None: use `$CIFAR10_DIR`, then the Keras
            cache, then a Keras download.

    Returns:
        A `DataSource`. An explicit `data_dir` or `$CIFAR10_DIR` that holds no
        batch files raises `CIFAR10NotFoundError` rather than falling through
        to another source: the caller asked for that folder.
    """
    if data_dir is not None:
        return _resolve_given(data_dir, "data_dir")
    if paths.data_dir() is not None:
        return _resolve_given(paths.data_dir(), "env")
    for cached in _keras_cache_dirs():
        if (cached / TEST_FILE).exists():
            return DataSource("keras_cache", cached)
    return DataSource("keras_download", None)


def is_offline_copy(folder: str | os.PathLike) -> bool:
    """Returns True when `folder/test_batch` is the JPEG re-encoded offline copy.

    False for `None` (data that Keras downloaded) and for a folder without `test_batch`.
    """
    if folder is None or not Path(folder, TEST_FILE).is_file():
        return False
    digest = hashlib.sha256(Path(folder, TEST_FILE).read_bytes()).hexdigest()
    return digest == OFFLINE_COPY_TEST_SHA256


def _load_folder(folder: Path, images_per_batch: int | None):
    parts = [read_batch(folder / name, images_per_batch) for name in TRAIN_FILES]
    n_train = sum(len(p[1]) for p in parts)
    x_train = np.empty((n_train, *IMAGE_SHAPE), dtype=np.uint8)
    y_train = np.empty((n_train, 1), dtype=np.uint8)
    start = 0
    for images, labels in parts:
        x_train[start : start + len(labels)] = images  # one strided copy into NHWC
        y_train[start : start + len(labels), 0] = labels
        start += len(labels)
    test_images, test_labels = read_batch(folder / TEST_FILE, images_per_batch)
    x_test = np.ascontiguousarray(test_images)
    y_test = test_labels.reshape(-1, 1)
    return (x_train, y_train), (x_test, y_test)


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    verbose: bool = True,
    images_per_batch: int | None = IMAGES_PER_BATCH,
    return_source: bool = False,
):
    """Loads CIFAR-10 like `keras.datasets.cifar10.load_data()`, offline first.

    Args:
        data_dir: a folder holding the batch files or a `cifar-10-batches-py/`
            sub-folder. Defaults to None: `$CIFAR10_DIR`, then the Keras cache,
            then `keras.datasets.cifar10.load_data()`.
        verbose: print which source was used. Defaults to True.
        images_per_batch: images each batch file must hold. Defaults to 10,000
            (the official files); None accepts any number (small test files).
        return_source: also return the `DataSource`, whose `variant` ("offline
            copy" or "official") is the label every accuracy measured on this
            data carries. Defaults to False.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: uint8 arrays of shapes
        `(50000, 32, 32, 3)`, `(50000, 1)`, `(10000, 32, 32, 3)`, `(10000, 1)`,
        C-contiguous, labels 0..9 in `CLASS_NAMES` order; with `return_source`,
        `((x_train, y_train), (x_test, y_test), source)`.

    Raises:
        CIFAR10NotFoundError: the folder asked for, or one of its files, is
            missing, or the Keras download failed (offline).
        CIFAR10DataError: a file is truncated, corrupt, malicious or has the
            wrong shape or labels. No partial dataset is ever returned.
    """
    source = locate_cifar10(data_dir)
    if source.kind == "keras_download":
        import keras

        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        except Exception as err:
            raise CIFAR10NotFoundError(
                f"CIFAR-10 is not on this machine and the Keras download failed "
                f"({type(err).__name__}: {err}). {FIX_HINT}"
            ) from None
        data = (np.ascontiguousarray(x_train), y_train), (np.ascontiguousarray(x_test), y_test)
    else:
        data = _load_folder(source.path, images_per_batch)
    if verbose:
        (x_train, _), (x_test, _) = data
        print(
            f"CIFAR-10 loaded from {source.describe()} ({source.describe_variant()}): "
            f"{len(x_train):,} training and {len(x_test):,} test images"
        )
    return (*data, source) if return_source else data


def split_train_val(x_train, y_train, val_fraction=0.1, seed=0):
    """Splits a stratified, seeded validation set off the training data.

    The test set is never used for this: it is kept for the final evaluation.

    Args:
        x_train: images, shape `(N, H, W, C)`.
        y_train: labels, shape `(N,)` or `(N, 1)`.
        val_fraction: share of the training images held out, in (0, 1), or a
            whole number of images. Defaults to 0.1 (5,000 of 50,000).
        seed: random seed; the same seed gives the same split. Defaults to 0.

    Returns:
        `(x_train, y_train), (x_val, y_val)`, each class in the same proportion
        in both parts.
    """
    from sklearn.model_selection import train_test_split

    if len(x_train) != len(y_train):
        raise ValueError(
            f"x_train has {len(x_train)} images but y_train has {len(y_train)} labels."
        )
    if isinstance(val_fraction, float) and not 0.0 < val_fraction < 1.0:
        raise ValueError(
            f"val_fraction must be in (0, 1) or a whole count; received {val_fraction}."
        )
    if isinstance(val_fraction, int) and not 0 < val_fraction < len(x_train):
        raise ValueError(
            f"val_fraction as a count must be in 1..{len(x_train) - 1}; received {val_fraction}."
        )
    x_tr, x_val, y_tr, y_val = train_test_split(
        x_train, y_train, test_size=val_fraction, stratify=np.ravel(y_train), random_state=seed
    )
    return (x_tr, y_tr), (x_val, y_val)


def stratified_subset(x, y, size, seed=0):
    """Returns a seeded subset of `size` images with the class balance of `y`.

    Used by quick mode (`CIFAR_QUICK=1`) to train on a few thousand images.

    Args:
        x: images, shape `(N, H, W, C)`.
        y: labels, shape `(N,)` or `(N, 1)`.
        size: images to keep; `size >= N` returns the inputs unchanged.
        seed: random seed. Defaults to 0.

    Returns:
        `(x_subset, y_subset)`.
    """
    if size >= len(x):
        return x, y
    (_, _), (x_sub, y_sub) = split_train_val(x, y, val_fraction=int(size), seed=seed)
    return x_sub, y_sub


def class_counts(labels_by_split, class_names=CLASS_NAMES):
    """Counts images per class for each split.

    Args:
        labels_by_split: mapping of split name to labels, e.g.
            `{"train": y_train, "test": y_test}`.
        class_names: names in label order. Defaults to `CLASS_NAMES`.

    Returns:
        A pandas DataFrame, one row per class, one column per split.
    """
    import pandas as pd

    return pd.DataFrame(
        {
            split: np.bincount(np.ravel(labels), minlength=len(class_names))
            for split, labels in labels_by_split.items()
        },
        index=pd.Index(class_names, name="class"),
    )


def channel_stats(x, chunk=5_000):
    """Per-channel mean and standard deviation of uint8 images, on [0, 1].

    Computed in chunks with float64 sums, so no float copy of the whole array
    is made.

    Args:
        x: uint8 images, shape `(N, H, W, C)`.
        chunk: images per chunk. Defaults to 5,000.

    Returns:
        `(mean, std)`, each a float64 array of shape `(C,)`.
    """
    total = np.zeros(x.shape[-1])
    total_sq = np.zeros(x.shape[-1])
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
    count = len(x) * x.shape[1] * x.shape[2]
    mean = total / count
    return mean, np.sqrt(total_sq / count - mean**2)


def normalization_layer(channels=3, name="normalize"):
    """Creates the layer that scales pixel values: the one place where that is defined.

    It maps pixels in [0, 255] to `(pixels / 255 - CIFAR10_MEAN) / CIFAR10_STD`
    per channel, so each channel has mean about 0 and standard deviation about
    1 on the training set. Every builder in `cifar_utils.models` puts this
    layer right after its input (and any augmentation), so models take raw
    pixels and a saved model carries its own preprocessing into evaluation,
    export and inference. `normalize_images` applies the same layer outside a
    model.

    Args:
        channels: 3 for RGB images; 1 for greyscale, which uses the average of
            the three channels' statistics. Defaults to 3.
        name: the layer's name. Defaults to "normalize".

    Returns:
        A `keras.layers.Normalization` layer, ready to use (nothing to adapt).
    """
    if channels == 3:
        means, stds = CIFAR10_MEAN, CIFAR10_STD
    elif channels == 1:
        means, stds = [float(np.mean(CIFAR10_MEAN))], [float(np.mean(CIFAR10_STD))]
    else:
        raise ValueError(f"channels must be 1 or 3; received {channels!r}.")
    mean = [255.0 * m for m in means]
    variance = [(255.0 * s) ** 2 for s in stds]
    # float32 even under a mixed-precision policy: the scaled values feed the first
    # convolution, which casts them itself.
    return keras.layers.Normalization(mean=mean, variance=variance, dtype="float32", name=name)


def normalize_images(images):
    """Scales pixel values outside a model, exactly as `normalization_layer()` does.

    For models that do not normalise inside (the builders of
    `cifar_utils.models` do), e.g. through `make_dataset(..., normalize=True)`.
    The test suite checks that both give the same numbers.

    Args:
        images: a tensor or array of pixel values in [0, 255], channels last.

    Returns:
        A float32 tensor of the same shape.
    """
    from keras import ops

    images = ops.cast(images, "float32") / 255.0
    mean = ops.convert_to_tensor(np.array(CIFAR10_MEAN, "float32"))
    std = ops.convert_to_tensor(np.array(CIFAR10_STD, "float32"))
    return (images - mean) / std


def _checked_dataset_arguments(x, y, batch_size):
    """`make_dataset`'s images, labels and batch size, checked: `(x, y, batch_size)`.

    Raises:
        ValueError: `x` is not a non-empty `(N, H, W, C)` uint8 array with one label
            in `y` per image, or `batch_size` is not a whole number >= 1.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"x must have shape (N, height, width, channels); received {x.shape}.")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} images but y has {len(y)} labels.")
    if len(x) == 0:
        raise ValueError("x is empty: a dataset needs at least one image.")
    batch_size = checks.whole_number(batch_size, "batch_size", minimum=1)
    if x.dtype != np.uint8:
        raise ValueError(
            f"x must be uint8 pixels in [0, 255] (as load_cifar10 returns them); received "
            f"{x.dtype}. Keeping uint8 saves memory: the pipeline casts one batch at a time."
        )
    return x, y, batch_size


def make_dataset(
    x,
    y,
    batch_size=128,
    shuffle=False,
    seed=None,
    augment_fn=None,
    normalize=False,
    num_classes=None,
    drop_remainder=False,
):
    """Builds the batches a model is fitted on, keeping the images as uint8.

    The images are held once, as a uint8 tensor. Each step gathers a batch of
    indices (shuffled with `seed` every epoch when `shuffle=True`), casts only
    that batch to float32 in [0, 255], applies `augment`, optionally
    `normalize_images`, and prefetches with AUTOTUNE.

    The models of `cifar_utils.models` take pixels in [0, 255] and normalise
    inside (`normalization_layer`), so the default leaves pixels as they are.

    Args:
        x: uint8 images, shape `(N, H, W, C)`.
        y: integer labels, shape `(N,)` or `(N, 1)`.
        batch_size: images per batch. Defaults to 128.
        shuffle: reshuffle the order every epoch. Defaults to False.
        seed: shuffle seed; the same seed gives the same order. Defaults to None.
        augment_fn: optional callable `(images, labels) -> (images, labels)` run
            on each float32 batch in [0, 255] before normalisation (labels are
            one-hot when `num_classes` is set, so MixUp and CutMix can mix them).
            Defaults to None.
        normalize: apply `normalize_images`, for a model that does not
            normalise inside. Defaults to False: float32 pixels in [0, 255].
        num_classes: one-hot encode the labels with this many classes. Defaults
            to None: int32 class indices.
        drop_remainder: drop a last, smaller batch. Defaults to False.

    Returns:
        On TensorFlow, a `tf.data.Dataset` of `(images, labels)` batches; on JAX and
        PyTorch, an `ArrayBatches` of the same batches (NumPy arrays).
    """
    if not backend.is_tensorflow():  # ArrayBatches checks the arguments itself
        return ArrayBatches(
            x, y, batch_size, shuffle, seed, augment_fn, normalize, num_classes, drop_remainder
        )
    import tensorflow as tf

    x, y, batch_size = _checked_dataset_arguments(x, y, batch_size)

    images = tf.constant(x)
    labels = tf.constant(np.ravel(y).astype(np.int32))

    def load_batch(indices):
        batch_x = tf.cast(tf.gather(images, indices), tf.float32)
        batch_y = tf.gather(labels, indices)
        if num_classes is not None:
            batch_y = tf.one_hot(batch_y, num_classes)
        return batch_x, batch_y

    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment_fn is not None:
        # One batch at a time, in order: seeded random layers then draw their numbers
        # in the same order every run, so a seed repeats the augmentation exactly.
        ds = ds.map(augment_fn)
    if normalize:
        ds = ds.map(
            lambda batch_x, batch_y: (normalize_images(batch_x), batch_y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


class ArrayBatches(keras.utils.PyDataset):
    """`make_dataset`'s batches from NumPy arrays, for backends without `tf.data`.

    The same arguments, checks and batches as `make_dataset` on TensorFlow: uint8 images
    held once, each batch gathered and cast to float32 in [0, 255], `augment_fn` applied
    to the whole batch (Keras's random layers run on any backend), an order reshuffled
    with `seed` at the end of every epoch. Read it with `model.fit`, `for images, labels
    in batches` (one epoch), or `endless_batches`.
    """

    def __init__(
        self,
        x,
        y,
        batch_size=128,
        shuffle=False,
        seed=None,
        augment_fn=None,
        normalize=False,
        num_classes=None,
        drop_remainder=False,
    ):
        super().__init__()
        self.x, y, self.batch_size = _checked_dataset_arguments(x, y, batch_size)
        self.labels = np.ravel(y).astype(np.int32)
        self.shuffle, self.augment_fn = shuffle, augment_fn
        self.normalize, self.num_classes = normalize, num_classes
        self.drop_remainder = drop_remainder
        # Without a seed, one drawn from NumPy's global generator, which set_seed seeds.
        self._rng = np.random.default_rng(
            seed if seed is not None else np.random.randint(2**31 - 1)
        )
        self._order = self._rng.permutation(len(self.x)) if shuffle else np.arange(len(self.x))

    def __len__(self):
        n, size = len(self.x), self.batch_size
        return n // size if self.drop_remainder else -(-n // size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        indices = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.x[indices].astype(np.float32)
        labels = self.labels[indices]
        if self.num_classes is not None:
            labels = np.eye(self.num_classes, dtype=np.float32)[labels]
        if self.augment_fn is not None:
            images, labels = self.augment_fn(images, labels)
        if self.normalize:
            images = normalize_images(images)
        return keras.ops.convert_to_numpy(images), keras.ops.convert_to_numpy(labels)

    def on_epoch_end(self):
        if self.shuffle:
            self._order = self._rng.permutation(len(self.x))


def is_endless(batches) -> bool:
    """Whether a dataset never ends (`fit` then needs `steps_per_epoch`): only `tf.data`'s can."""
    if not hasattr(batches, "cardinality"):
        return False  # a keras.utils.PyDataset: one epoch a pass
    import tensorflow as tf

    return bool(batches.cardinality() == tf.data.INFINITE_CARDINALITY)


def endless_batches(batches):
    """Yields the batches of a dataset epoch after epoch, without end.

    Args:
        batches: what `make_dataset` or `augment.training_dataset` returned (a `tf.data`
            dataset, endless or not, or a `keras.utils.PyDataset`).

    Yields:
        `(images, labels)` batches.
    """
    if hasattr(batches, "repeat"):  # tf.data
        yield from batches.repeat()
        return
    while True:
        for index in range(len(batches)):
            yield batches[index]
        batches.on_epoch_end()


LOSSLESS_SAMPLE_SIZE = 1000


def load_lossless_test_sample(path=None) -> np.ndarray:
    """The first 1,000 official CIFAR-10 test images, lossless, from one PNG.

    The offline copy's pixels are JPEG re-encoded, which makes its test set harder
    than the official one; this sample measures by how much. The PNG holds one
    image per row (1,000 rows of 1,024 RGB pixels, each row a 32 x 32 x 3 image in
    row-major order). The images are the official test set's first 1,000, in
    order, so their labels are `y_test[:1000]` of the official or the offline copy.

    Args:
        path: the PNG. Defaults to None: `paths.lossless_sample()` (`$CIFAR10_LOSSLESS`,
            else `official_test_first_1000.png` beside the `$CIFAR10_DIR` folder).

    Returns:
        uint8 images of shape `(1000, 32, 32, 3)`.

    Raises:
        CIFAR10DataError: the file is missing or not such a PNG.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser() if path is not None else paths.lossless_sample()
    hint = (
        f"set {paths.LOSSLESS_ENV_VAR} to the file {paths.LOSSLESS_FILE} "
        "(scripts/setup.sh puts it beside the offline copy)"
    )
    if path is None or not path.is_file():
        raise CIFAR10DataError(f"the lossless test sample is not at {path}; {hint}.")
    expected = (LOSSLESS_SAMPLE_SIZE, 32 * 32)  # rows, pixels per row
    try:
        with Image.open(path) as image:
            if (image.height, image.width) != expected:
                raise CIFAR10DataError(
                    f"{path}: expected {expected[0]} rows of {expected[1]} pixels; received "
                    f"{image.height} x {image.width}. {hint}."
                )
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise CIFAR10DataError(f"{path} is not a readable PNG ({err}); {hint}.") from None
    return pixels.reshape(LOSSLESS_SAMPLE_SIZE, 32, 32, 3)

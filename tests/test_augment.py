"""cifar_utils.augment: every policy keeps shape, dtype and range, repeats with a seed,
is inactive at inference, and mixes labels into weights that sum to one."""

import keras
import numpy as np
import pytest
from keras import ops

from cifar_utils import augment, backend, data, storage
from cifar_utils.custom_objects import ShiftFlip

ALL_POLICIES = list(augment.POLICIES) + ["cutout+mixup", "randaugment+cutmix", "standard+cutout"]
PER_IMAGE = [
    p for p in ALL_POLICIES if not set(augment.parse_policy(p)) & set(augment.LABEL_MIXING)
]


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = ops.convert_to_tensor(rng.integers(0, 256, (16, 32, 32, 3)).astype("float32"))
    labels = ops.one_hot(np.arange(16) % 10, 10)
    return images, labels


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_policy_keeps_shape_dtype_range_and_label_sums(policy, batch):
    images, labels = batch
    out_images, out_labels = augment.pipeline_augment(policy, seed=3)(images, labels)
    assert out_images.shape == images.shape and _dtype(out_images) == "float32"
    assert float(ops.min(out_images)) >= 0.0 and float(ops.max(out_images)) <= 255.0
    assert out_labels.shape == labels.shape
    np.testing.assert_allclose(_np(ops.sum(out_labels, axis=1)), 1.0, atol=1e-5)
    assert float(ops.min(out_labels)) >= 0.0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_policy_repeats_with_a_seed(policy, batch):
    images, labels = batch
    first = augment.pipeline_augment(policy, seed=5)(images, labels)
    again = augment.pipeline_augment(policy, seed=5)(images, labels)
    np.testing.assert_array_equal(_np(first[0]), _np(again[0]))
    np.testing.assert_array_equal(_np(first[1]), _np(again[1]))
    if policy != "none":
        other = augment.pipeline_augment(policy, seed=6)(images, labels)
        assert not np.array_equal(_np(first[0]), _np(other[0]))


def test_seeded_policy_repeats_through_the_pipeline():
    x = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10

    def epoch(seed):
        ds = data.make_dataset(
            x,
            y,
            batch_size=8,
            shuffle=True,
            seed=seed,
            num_classes=10,
            augment_fn=augment.pipeline_augment("cutout+mixup", seed=seed),
        )
        return np.concatenate([_np(b[0]) for b in ds])

    np.testing.assert_array_equal(epoch(2), epoch(2))


@pytest.mark.parametrize("policy", PER_IMAGE)
def test_in_model_policy_is_identity_at_inference(policy, batch):
    images, _ = batch
    layer = augment.build_augmentation(policy, seed=1)
    np.testing.assert_array_equal(_np(layer(images, training=False)), _np(images))


@pytest.mark.parametrize("component", augment.LABEL_MIXING)
def test_label_mixing_layers_are_identity_at_inference(component, batch):
    images, labels = batch
    layer = augment.augmentation_layers(component, seed=1)[-1]
    out = layer({"images": images, "labels": labels}, training=False)
    np.testing.assert_array_equal(_np(out["images"]), _np(images))
    np.testing.assert_array_equal(_np(out["labels"]), _np(labels))


def test_standard_moves_pixels_but_keeps_them_whole(batch):
    images, labels = batch
    out, _ = augment.pipeline_augment("standard", seed=0)(images, labels)
    # Flip and whole-pixel shifts with reflected borders only rearrange values.
    assert not np.array_equal(_np(out), _np(images))
    assert set(np.unique(_np(out))) <= set(np.unique(_np(images)))


def test_cutout_fills_with_the_mean_pixel(batch):
    images, labels = batch
    out, _ = augment.pipeline_augment("cutout", seed=0)(images, labels)
    filled = np.all(np.isclose(_np(out), augment.MEAN_PIXEL, atol=1e-3), axis=-1)
    per_image = filled.mean(axis=(1, 2))
    assert np.all(per_image > 0.05), per_image  # every image has an erased patch


def test_mixup_blends_two_labels_per_image(batch):
    images, labels = batch
    _, mixed = augment.pipeline_augment("mixup", seed=0)(images, labels)
    nonzero = (_np(mixed) > 1e-6).sum(axis=1)
    assert np.all(nonzero <= 2) and np.any(nonzero == 2)


def test_parse_policy_order_and_errors():
    assert augment.parse_policy("mixup+cutout") == ("flip", "crop", "cutout", "mixup")
    assert augment.parse_policy("none") == ()
    with pytest.raises(
        ValueError, match=r"Unknown augmentation policy 'sharpen' in 'standard\+sharpen'"
    ):
        augment.parse_policy("standard+sharpen")
    with pytest.raises(ValueError, match="both MixUp and CutMix"):
        augment.parse_policy("mixup+cutmix")
    with pytest.raises(ValueError, match="received ''"):
        augment.parse_policy("")
    with pytest.raises(ValueError, match="received None"):
        augment.parse_policy(None)


def test_label_mixing_cannot_go_inside_a_model():
    with pytest.raises(ValueError, match="mixup, which mixes labels.*pipeline_augment"):
        augment.build_augmentation("cutout+mixup")


def test_label_mixing_needs_one_hot_labels(batch):
    images, _ = batch
    with pytest.raises(ValueError, match="received int32 labels of shape"):
        augment.pipeline_augment("cutmix")(images, ops.zeros((16,), "int32"))


def test_every_policy_is_described():
    assert set(augment.DESCRIPTIONS) == set(augment.POLICIES)


def test_in_model_augmentation_serialises(tmp_path, batch):
    images, _ = batch
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), augment.build_augmentation("randaugment+cutout", seed=1)]
    )
    model.save(tmp_path / "aug.keras")
    loaded = keras.saving.load_model(tmp_path / "aug.keras", safe_mode=True)
    np.testing.assert_array_equal(_np(loaded(images, training=False)), _np(images))
    assert [layer.name for layer in loaded.layers[0].layers] == [
        "flip",
        "pad_and_crop",
        "randaugment",
        "cutout",
    ]


def test_measure_throughput_counts_images_per_second(monkeypatch):
    from cifar_utils import timing

    x = np.zeros((64, 32, 32, 3), np.uint8)
    y = np.arange(64) % 10
    real_rate = augment.measure_throughput("standard", x, y, batch_size=16, batches=2)
    assert 0 < real_rate < np.inf

    # The rate is the images of the timed batches over the timed seconds: count both.
    seen, real_endless_batches = [], augment.endless_batches

    def counting(ds):  # the pipeline's endless stream, counting the images of each batch drawn
        for images, labels in real_endless_batches(ds):
            seen.append(int(images.shape[0]))
            yield images, labels

    def fake_best_time(fn, **kwargs):
        drawn = len(seen)
        fn()
        timed.append(sum(seen[drawn:]))  # images drawn inside the timed call
        return 0.25

    timed = []
    monkeypatch.setattr(augment, "endless_batches", counting)
    monkeypatch.setattr(timing, "best_time", fake_best_time)
    monkeypatch.setattr(
        augment, "best_time", fake_best_time, raising=False
    )  # as augment imported it
    rate = augment.measure_throughput("standard", x, y, batch_size=16, batches=3)
    assert seen == [16] * 4  # one warm-up batch, then the three timed ones
    assert timed == [48] and rate == pytest.approx(48 / 0.25)
    with pytest.raises(ValueError, match="batches must be a whole number.*received 0"):
        augment.measure_throughput("standard", x, y, batches=0)


def test_training_dataset_shuffles_augments_and_one_hot_encodes():
    x = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10

    def batches(augmentation, **kwargs):
        return list(augment.training_dataset(x, y, augmentation, batch_size=16, seed=4, **kwargs))

    plain = batches("none")
    assert [int(b[0].shape[0]) for b in plain] == [16, 16, 8]
    images = np.concatenate([_np(b[0]) for b in plain])
    labels = np.concatenate([_np(b[1]) for b in plain])
    assert images.dtype == np.float32 and labels.shape == (40, 10)
    # "none": the very images, shuffled, each with its own one-hot label
    order = [
        int(np.flatnonzero((x == image.astype(np.uint8)).all(axis=(1, 2, 3)))[0])
        for image in images
    ]
    assert sorted(order) == list(range(40)) and order != list(range(40))
    np.testing.assert_array_equal(labels.argmax(1), y[order])
    assert [int(b[0].shape[0]) for b in batches("none", drop_remainder=True)] == [16, 16]
    mixed = batches("mixup")  # label mixing needs the one-hot labels the pipeline gives
    assert np.any((_np(mixed[0][1]) > 1e-6).sum(axis=1) == 2)
    again = batches("standard")
    np.testing.assert_array_equal(_np(again[0][0]), _np(batches("standard")[0][0]))  # seeded
    assert not np.array_equal(_np(again[0][0]), _np(plain[0][0]))


# --- "airbench": shifts of up to 2 pixels and alternating flip, over whole epochs ---------------


def _distinct_images(n, size=8):
    """Images that differ from each other and from their own mirror images."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 10


def _np(tensor):
    return ops.convert_to_numpy(tensor)


def _dtype(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def _epochs(ds, epochs, steps):
    it = data.endless_batches(ds)
    return [[tuple(_np(t) for t in next(it)) for _ in range(steps)] for _ in range(epochs)]


def _which(x, image):
    """(index, flipped) of `image` among `x` and their mirror images."""
    for i, candidate in enumerate(x):
        if np.array_equal(candidate, image):
            return i, False
        if np.array_equal(candidate[:, ::-1], image):
            return i, True
    raise AssertionError("the image is neither an input nor its mirror image")


def test_alternating_flip_mirrors_each_image_in_every_other_epoch():
    x, y = _distinct_images(12)
    ds = augment.alternating_dataset(x, y, batch_size=4, seed=3, max_shift=0)
    flips = []
    for batches in _epochs(ds, 4, 3):
        seen = {}
        for images, labels in batches:
            for image, label in zip(_np(images).astype(np.uint8), _np(labels)):
                index, flipped = _which(x, image)
                assert label.argmax() == y[index]  # labels travel with their images
                seen[index] = flipped
        assert sorted(seen) == list(range(12))  # every image once per epoch
        flips.append([seen[i] for i in range(12)])
    assert 0 < sum(flips[0]) < 12  # a random part is mirrored first...
    assert flips[1] == [not f for f in flips[0]]  # ...exactly the others next epoch
    assert flips[2] == flips[0] and flips[3] == flips[1]


def test_airbench_shifts_are_reflected_crops_of_at_most_two_pixels():
    x, y = _distinct_images(16)
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    offsets = set()
    for images, _ in _epochs(augment.alternating_dataset(x, y, batch_size=8, seed=1), 2, 2)[1]:
        for image in _np(images).astype(np.uint8):
            found = [
                (i, dy, dx)
                for i in range(16)
                for dy in range(5)
                for dx in range(5)
                for view in (padded[i], padded[i][:, ::-1])
                if np.array_equal(view[dy : dy + 8, dx : dx + 8], image)
            ]
            assert found, "not a crop of the reflect-padded image"
            offsets.add(found[0][1:])
    assert len(offsets) > 3  # the shift varies


def test_airbench_stream_repeats_with_its_seed_and_changes_with_another():
    x, y = _distinct_images(8)
    first = _epochs(augment.training_dataset(x, y, "airbench", batch_size=4, seed=5), 2, 2)
    again = _epochs(augment.training_dataset(x, y, "airbench", batch_size=4, seed=5), 2, 2)
    other = _epochs(augment.training_dataset(x, y, "airbench", batch_size=4, seed=6), 2, 2)
    flat = lambda run: np.concatenate([_np(b[0]) for epoch in run for b in epoch])  # noqa: E731
    assert np.array_equal(flat(first), flat(again)) and not np.array_equal(flat(first), flat(other))
    ds = augment.training_dataset(x, y, "airbench", batch_size=4, seed=5)
    # endless on TensorFlow (train() then passes steps_per_epoch); one epoch a pass elsewhere
    assert data.is_endless(ds) == backend.is_tensorflow()


def test_airbench_policy_stands_alone_and_is_not_a_batch_hook():
    assert augment.parse_policy("airbench") == ("airbench",)
    assert "airbench" not in augment.POLICIES  # the notebook's gallery draws layer policies only
    with pytest.raises(ValueError, match="combines with no other policy"):
        augment.parse_policy("airbench+cutout")
    with pytest.raises(ValueError, match="training_dataset"):
        augment.pipeline_augment("airbench")
    x, y = _distinct_images(4)
    with pytest.raises(ValueError, match="max_shift must be below the image size; received 8"):
        augment.alternating_dataset(x, y, max_shift=8)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_shift must be a whole number"):
            augment.alternating_dataset(x, y, max_shift=bad)
    with pytest.raises(ValueError, match="batch_size must be a whole number.*received 0"):
        augment.alternating_dataset(x, y, batch_size=0)
    with pytest.raises(ValueError, match="uint8"):
        augment.alternating_dataset(x.astype(np.float32), y)
    with pytest.raises(ValueError, match="labels"):
        augment.alternating_dataset(x, y[:3])
    assert augment.measure_throughput("airbench", x, y, batch_size=2, batches=3) > 0


@pytest.mark.parametrize("policy", ["cutmix", "mixup", "randaugment+cutout"])
def test_policies_work_under_a_mixed_bfloat16_global_policy(policy):
    """Layers are float32 whatever the global policy: with mixed_bfloat16 (a GPU, or a CPU with
    bfloat16 instructions) CutMix once failed to mix bfloat16 images with float32 weights."""
    images = keras.random.uniform((8, 32, 32, 3), 0, 255, seed=1)
    labels = ops.one_hot(np.arange(8) % 10, 10)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        out_images, out_labels = augment.pipeline_augment(policy, seed=2)(images, labels)
    finally:
        keras.config.set_dtype_policy("float32")
    assert _dtype(out_images) == "float32" and out_labels.shape == (8, 10)


def test_airbench96_shifts_up_to_four_pixels_and_cuts_out_a_twelve_pixel_square():
    x, y = _distinct_images(8, size=32)
    padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    mean = np.array(augment.MEAN_PIXEL, np.float32)
    corners = set()
    stream = augment.training_dataset(x, y, "airbench96", batch_size=8, seed=2)
    for images, _ in _epochs(stream, 2, 1)[1]:
        for image in _np(images):
            square = np.all(image == mean, axis=-1)
            rows, cols = np.nonzero(square)
            assert square.sum() == 144 and np.ptp(rows) == np.ptp(cols) == 11  # one 12 x 12
            corners.add((rows.min(), cols.min()))
            kept = ~square
            found = [
                (dy, dx)
                for i in range(8)
                for dy in range(9)
                for dx in range(9)
                for view in (padded[i], padded[i][:, ::-1])
                if np.array_equal(view[dy : dy + 32, dx : dx + 32][kept], image[kept])
            ]
            assert found, "not a crop of the 4-pixel reflect-padded image"
    assert len(corners) > 1  # the square moves
    assert augment.parse_policy("airbench96") == ("airbench96",)
    with pytest.raises(ValueError, match="cutout must be a whole number from 0 to 8"):
        augment.alternating_dataset(*_distinct_images(4), cutout=9)


def test_the_none_policy_makes_a_plain_training_dataset():
    x, y = _distinct_images(8)
    images, labels = next(iter(augment.training_dataset(x, y, "none", batch_size=4, seed=0)))
    assert images.shape == (4, 8, 8, 3) and labels.shape == (4, 10)
    assert sorted(_which(x, _np(image).astype(np.uint8))[1] for image in images) == [False] * 4


@pytest.mark.parametrize("policy", ["airbench", "airbench96"])
def test_airbench_in_the_model_is_shifts_and_random_flips_compiled_with_the_step(policy, tmp_path):
    """build_augmentation's ShiftFlip: the same shifts (and square) as the dataset, flips at
    random, inactive at inference, seeded, saved and loaded with the model, compiled."""
    max_shift, cutout = augment.EPOCH_POLICY_SETTINGS[policy]
    layer = augment.build_augmentation(policy, seed=3)
    assert isinstance(layer, ShiftFlip) and (layer.max_shift, layer.cutout) == (max_shift, cutout)
    x, _ = _distinct_images(16, size=32)
    images = x.astype(np.float32)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images)), images)  # inference
    s = max_shift
    padded = np.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
    flipped = 0
    for i in range(len(x)):
        square = np.all(out[i] == np.float32(augment.MEAN_PIXEL), axis=-1)[..., None]
        assert square.sum() == cutout**2
        views = [
            (view[dy : dy + 32, dx : dx + 32], mirrored)
            for mirrored, view in ((False, padded[i]), (True, padded[i][:, ::-1]))
            for dy in range(2 * s + 1)
            for dx in range(2 * s + 1)
        ]
        matches = [
            m
            for view, m in views
            if np.array_equal(np.where(square, 0, view), np.where(square, 0, out[i]))
        ]
        assert matches, f"image {i} is no shifted crop of at most {s} pixels"
        flipped += matches[0]
    assert 0 < flipped < len(x)  # some mirrored, some not
    again = augment.build_augmentation(policy, seed=3)
    assert np.array_equal(keras.ops.convert_to_numpy(again(images, training=True)), out)

    model = keras.Sequential(
        [keras.Input((32, 32, 3)), layer, keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=backend.name() != "torch")
    model.fit(images, np.arange(16) % 10, batch_size=8, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = storage.load_model(tmp_path / "m.keras")
    assert loaded.layers[0].get_config() == layer.get_config()
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5
    )


def test_shift_flip_refuses_bad_arguments():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_shift must be a whole number >= 0; received"):
            ShiftFlip(max_shift=bad)
    with pytest.raises(ValueError, match="cutout must be a whole number"):
        ShiftFlip(cutout=-2)
    with pytest.raises(ValueError, match="image size 8 x 8; received max_shift=8"):
        ShiftFlip(max_shift=8)(np.zeros((1, 8, 8, 3), "float32"))

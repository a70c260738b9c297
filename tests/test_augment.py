"""cifar_utils.augment: every policy keeps shape, dtype and range, repeats with a seed,
is inactive at inference, and mixes labels into weights that sum to one."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifar_utils import augment, data

ALL_POLICIES = list(augment.POLICIES) + ["cutout+mixup", "randaugment+cutmix", "standard+cutout"]
PER_IMAGE = [p for p in ALL_POLICIES if not set(augment.parse_policy(p)) & set(augment.LABEL_MIXING)]


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (16, 32, 32, 3)).astype("float32"))
    labels = tf.one_hot(np.arange(16) % 10, 10)
    return images, labels


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_policy_keeps_shape_dtype_range_and_label_sums(policy, batch):
    images, labels = batch
    out_images, out_labels = augment.pipeline_augment(policy, seed=3)(images, labels)
    assert out_images.shape == images.shape and out_images.dtype == tf.float32
    assert float(tf.reduce_min(out_images)) >= 0.0 and float(tf.reduce_max(out_images)) <= 255.0
    assert out_labels.shape == labels.shape
    np.testing.assert_allclose(tf.reduce_sum(out_labels, axis=1).numpy(), 1.0, atol=1e-5)
    assert float(tf.reduce_min(out_labels)) >= 0.0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_policy_repeats_with_a_seed(policy, batch):
    images, labels = batch
    first = augment.pipeline_augment(policy, seed=5)(images, labels)
    again = augment.pipeline_augment(policy, seed=5)(images, labels)
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
    if policy != "none":
        other = augment.pipeline_augment(policy, seed=6)(images, labels)
        assert not np.array_equal(first[0].numpy(), other[0].numpy())


def test_seeded_policy_repeats_through_the_pipeline():
    x = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10

    def epoch(seed):
        ds = data.make_dataset(
            x, y, batch_size=8, shuffle=True, seed=seed, num_classes=10,
            augment_fn=augment.pipeline_augment("cutout+mixup", seed=seed),
        )
        return np.concatenate([b[0].numpy() for b in ds])

    np.testing.assert_array_equal(epoch(2), epoch(2))


@pytest.mark.parametrize("policy", PER_IMAGE)
def test_in_model_policy_is_identity_at_inference(policy, batch):
    images, _ = batch
    layer = augment.build_augmentation(policy, seed=1)
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images.numpy())


@pytest.mark.parametrize("component", augment.LABEL_MIXING)
def test_label_mixing_layers_are_identity_at_inference(component, batch):
    images, labels = batch
    layer = augment.augmentation_layers(component, seed=1)[-1]
    out = layer({"images": images, "labels": labels}, training=False)
    np.testing.assert_array_equal(out["images"].numpy(), images.numpy())
    np.testing.assert_array_equal(out["labels"].numpy(), labels.numpy())


def test_standard_moves_pixels_but_keeps_them_whole(batch):
    images, labels = batch
    out, _ = augment.pipeline_augment("standard", seed=0)(images, labels)
    # Flip and whole-pixel shifts with reflected borders only rearrange values.
    assert not np.array_equal(out.numpy(), images.numpy())
    assert set(np.unique(out.numpy())) <= set(np.unique(images.numpy()))


def test_cutout_fills_with_the_mean_pixel(batch):
    images, labels = batch
    out, _ = augment.pipeline_augment("cutout", seed=0)(images, labels)
    filled = np.all(np.isclose(out.numpy(), augment.MEAN_PIXEL, atol=1e-3), axis=-1)
    per_image = filled.mean(axis=(1, 2))
    assert np.all(per_image > 0.05), per_image  # every image has an erased patch


def test_mixup_blends_two_labels_per_image(batch):
    images, labels = batch
    _, mixed = augment.pipeline_augment("mixup", seed=0)(images, labels)
    nonzero = (mixed.numpy() > 1e-6).sum(axis=1)
    assert np.all(nonzero <= 2) and np.any(nonzero == 2)


def test_parse_policy_order_and_errors():
    assert augment.parse_policy("mixup+cutout") == ("flip", "crop", "cutout", "mixup")
    assert augment.parse_policy("none") == ()
    with pytest.raises(ValueError, match=r"Unknown augmentation policy 'sharpen' in 'standard\+sharpen'"):
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
        augment.pipeline_augment("cutmix")(images, tf.zeros((16,), tf.int32))


def test_every_policy_is_described():
    assert set(augment.DESCRIPTIONS) == set(augment.POLICIES)


def test_in_model_augmentation_serialises(tmp_path, batch):
    images, _ = batch
    model = keras.Sequential([keras.Input((32, 32, 3)), augment.build_augmentation("randaugment+cutout", seed=1)])
    model.save(tmp_path / "aug.keras")
    loaded = keras.saving.load_model(tmp_path / "aug.keras", safe_mode=True)
    np.testing.assert_array_equal(loaded(images, training=False).numpy(), images.numpy())
    assert [layer.name for layer in loaded.layers[0].layers] == ["flip", "pad_and_crop", "randaugment", "cutout"]


def test_measure_throughput_counts_images_per_second(monkeypatch):
    from cifar_utils import timing

    x = np.zeros((64, 32, 32, 3), np.uint8)
    y = np.arange(64) % 10
    real_rate = augment.measure_throughput("standard", x, y, batch_size=16, batches=2)
    assert 0 < real_rate < np.inf

    # The rate is the images of the timed batches over the timed seconds: count both.
    seen, real_make_dataset = [], augment.make_dataset

    class Counting:  # the pipeline, counting the images of each batch drawn from it
        def __init__(self, ds):
            self.ds = ds

        def repeat(self):
            return Counting(self.ds.repeat())

        def __iter__(self):
            for images, labels in self.ds:
                seen.append(int(images.shape[0]))
                yield images, labels

    def fake_best_time(fn, **kwargs):
        drawn = len(seen)
        fn()
        timed.append(sum(seen[drawn:]))  # images drawn inside the timed call
        return 0.25

    timed = []
    monkeypatch.setattr(augment, "make_dataset", lambda *a, **k: Counting(real_make_dataset(*a, **k)))
    monkeypatch.setattr(timing, "best_time", fake_best_time)
    monkeypatch.setattr(augment, "best_time", fake_best_time, raising=False)  # as augment imported it
    rate = augment.measure_throughput("standard", x, y, batch_size=16, batches=3)
    assert seen == [16] * 4  # one warm-up batch, then the three timed ones
    assert timed == [48] and rate == pytest.approx(48 / 0.25)
    with pytest.raises(ValueError, match="received 0"):
        augment.measure_throughput("standard", x, y, batches=0)


def test_training_dataset_shuffles_augments_and_one_hot_encodes():
    x = np.random.default_rng(2).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 10

    def batches(augmentation, **kwargs):
        return list(augment.training_dataset(x, y, augmentation, batch_size=16, seed=4, **kwargs))

    plain = batches("none")
    assert [int(b[0].shape[0]) for b in plain] == [16, 16, 8]
    images = np.concatenate([b[0].numpy() for b in plain])
    labels = np.concatenate([b[1].numpy() for b in plain])
    assert images.dtype == np.float32 and labels.shape == (40, 10)
    # "none": the very images, shuffled, each with its own one-hot label
    order = [int(np.flatnonzero((x == image.astype(np.uint8)).all(axis=(1, 2, 3)))[0]) for image in images]
    assert sorted(order) == list(range(40)) and order != list(range(40))
    np.testing.assert_array_equal(labels.argmax(1), y[order])
    assert [int(b[0].shape[0]) for b in batches("none", drop_remainder=True)] == [16, 16]
    mixed = batches("mixup")  # label mixing needs the one-hot labels the pipeline gives
    assert np.any((mixed[0][1].numpy() > 1e-6).sum(axis=1) == 2)
    again = batches("standard")
    np.testing.assert_array_equal(again[0][0].numpy(), batches("standard")[0][0].numpy())  # seeded
    assert not np.array_equal(again[0][0].numpy(), plain[0][0].numpy())

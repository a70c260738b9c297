"""The GPU path end to end on the CPU: train a recipe under forced GPU settings, then use the model.

`rehearse()` is shared by `test_gpu_path.py`, in-process for the dtype policies and XLA, and
in a fresh process for `MirroredStrategy` over two logical CPUs (logical devices must be set
up before TensorFlow starts). Whatever breaks here would break on a learner's GPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from cifar_utils import evaluation, export, inference, recipes, training

# A few steps of each recipe: 64 training images in batches of 32, one epoch.
STEPS = dict(epochs=1, batch_size=32)


def rehearse(recipe_name, setup, x, y, x_val, y_val, output_dir) -> dict:
    """Trains `recipe_name` under `setup`, then evaluates, reloads, exports and classifies.

    Returns:
        What the test asserts on, checked here already where a check needs the live objects.
    """
    output_dir = Path(output_dir)
    recipe = recipes.get_recipe(recipe_name, **STEPS)
    result = training.train(
        recipe, x, y, x_val, y_val, output_dir=output_dir, setup=setup, verbose=0
    )
    model = result.model
    assert model.dtype_policy.name == setup.precision_policy, (
        model.dtype_policy.name,
        setup.precision_policy,
    )
    losses = result.history["loss"] + result.history["val_loss"]
    assert np.all(np.isfinite(losses)), losses
    loss_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)

    # The model's outputs stay float32 under every policy (the softmax layer is float32).
    outputs = model(x_val[:4].astype("float32"), training=False)
    assert keras.backend.standardize_dtype(outputs.dtype) == "float32", outputs.dtype
    accuracy = evaluation.accuracy(model, x_val, y_val, tta=True)
    assert 0.0 <= accuracy <= 1.0

    # Reloaded in safe mode: the same predictions as the model in memory.
    reloaded = keras.saving.load_model(result.final_model_path, safe_mode=True)
    np.testing.assert_array_equal(
        np.asarray(reloaded(x_val.astype("float32"), training=False)),
        np.asarray(model(x_val.astype("float32"), training=False)),
    )

    # Exported to TFLite and used through the same Classifier as a learner's pictures.
    paths = export.export_all(model, output_dir / "exports", formats=("tflite_float32",))
    picture = io.BytesIO()
    Image.fromarray(x_val[0]).resize((97, 61)).save(picture, format="PNG")
    answers = {}
    for name, source in (("keras", result.final_model_path), ("tflite", paths["tflite_float32"])):
        classifier = inference.Classifier(source)
        top = classifier.predict([picture.getvalue()], top_k=3)[0]
        assert len(top) == 3 and all(p.label in classifier.class_names for p in top)
        probs = classifier.predict_proba(x_val)
        assert probs.dtype == np.float32 and np.allclose(probs.sum(-1), 1, atol=1e-3)
        answers[name] = probs
    return {
        "accuracy": accuracy,
        "loss_scaled": loss_scaled,
        "keras_tflite_max_diff": float(np.abs(answers["keras"] - answers["tflite"]).max()),
        "replicas": setup.num_replicas,
    }

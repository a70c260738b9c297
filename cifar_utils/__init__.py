"""Helpers for the CIFAR-10 Keras/TensorFlow teaching notebooks.

One module per concern:

- `cifar_utils.paths`: every environment variable and default folder; finding the trained model.
- `cifar_utils.data`: loading (offline first), splits, `tf.data` pipelines, normalisation.
- `cifar_utils.augment`: named augmentation policies from Keras preprocessing layers.
- `cifar_utils.layers`: keras-io style layer stacks.
- `cifar_utils.models`: model builders, parameters and FLOPs.
- `cifar_utils.schedules`: learning-rate schedules.
- `cifar_utils.recipes`: every training recipe as one dictionary of hyperparameters.
- `cifar_utils.storage`: atomic writes of models and histories; `load_model` in safe mode.
- `cifar_utils.device`: CPU/GPU detection, distribution strategy, mixed precision.
- `cifar_utils.repro`: seeds and deterministic ops.
- `cifar_utils.reports`: the run facts recorded with each result; model cards.
- `cifar_utils.callbacks`: the Keras callbacks of a training run (checkpoints, resume, budgets).
- `cifar_utils.training`: compile and train a recipe in one call; the `cifar-train` command.
- `cifar_utils.evaluation`: predictions, metrics, confusion matrices, calibration, Grad-CAM.
- `cifar_utils.tuning`: KerasTuner search and regularisation ablations.
- `cifar_utils.timing`: warm up, then the best of several timed runs.
- `cifar_utils.inference`: classify new images in any format; the `cifar-predict` command.
- `cifar_utils.export`: SavedModel and TFLite exports and their comparison.
- `cifar_utils.web`: the upload-and-classify web demo; the `cifar-demo` command.
- `cifar_utils.plots`: figures for data, augmentation, training, evaluation and deployment.
- `cifar_utils.tf_logs`: keeps TensorFlow's C++ start-up lines out of notebooks.

The layers: `paths` and `tf_logs` use only the standard library; `data`, `augment`,
`layers`, `models`, `schedules`, `recipes`, `storage`, `device`, `repro` and `reports`
build on each other in that order; `callbacks`, `training` and `tuning` train; `evaluation`,
`inference`, `export` and `web` use trained models and never import `training`.

Importing the package is cheap; TensorFlow loads when a module that needs it does. Importing
it first applies `tf_logs.quiet_tensorflow()`, which must run before TensorFlow is imported
(set `CIFAR_TF_LOGS=1` to see all of TensorFlow's log lines).
"""

from cifar_utils import tf_logs as _tf_logs

_tf_logs.quiet_tensorflow()

__version__ = "0.1.0"


def load_model(path, compile=True):
    """Loads a `.keras` model of this course in Keras's safe mode (`storage.load_model`).

        import cifar_utils
        model = cifar_utils.load_model("models/fast_net.keras")

    The package's custom layers and schedules are passed to Keras explicitly, so no other
    import is needed; legacy `.h5` files are refused. See `storage.load_model` for the
    arguments. `storage` is imported here, not at the top, so that `import cifar_utils`
    stays free of TensorFlow, as `tf_logs` needs.
    """
    from cifar_utils import storage

    return storage.load_model(path, compile=compile)

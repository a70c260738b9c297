"""Helpers for the CIFAR-10 Keras/TensorFlow teaching notebooks.

One module per concern:

- `cifar_utils.data`: loading (offline first), splits, `tf.data` pipelines, normalisation.
- `cifar_utils.augment`: named augmentation policies from Keras preprocessing layers.
- `cifar_utils.layers`: keras-io style layer stacks.
- `cifar_utils.models`: model builders, parameters and FLOPs.
- `cifar_utils.recipes`: every training recipe as one dictionary of hyperparameters.
- `cifar_utils.training`: compile and train a recipe in one call; the `cifar-train` command.
- `cifar_utils.evaluation`: predictions, metrics, confusion matrices, calibration, Grad-CAM.
- `cifar_utils.tuning`: KerasTuner search and regularisation ablations.
- `cifar_utils.inference`: classify new images in any format; the `cifar-predict` command.
- `cifar_utils.export`: SavedModel and TFLite exports and their comparison.
- `cifar_utils.web`: the upload-and-classify web demo; the `cifar-demo` command.
- `cifar_utils.storage`: atomic writes of models and histories.
- `cifar_utils.device`: CPU/GPU detection, distribution strategy, mixed precision.
- `cifar_utils.plots`: figures for data, augmentation, training, evaluation and deployment.
- `cifar_utils.repro`: seeds, quick mode, and the run facts recorded with each result.

- `cifar_utils.tf_logs`: keeps TensorFlow's C++ start-up lines out of notebooks.

Importing the package is cheap; TensorFlow loads when a module that needs it does. Importing
it first applies `tf_logs.quiet_tensorflow()`, which must run before TensorFlow is imported
(set `CIFAR_TF_LOGS=1` to see all of TensorFlow's log lines).
"""

from cifar_utils import tf_logs as _tf_logs

_tf_logs.quiet_tensorflow()

__version__ = "0.1.0"

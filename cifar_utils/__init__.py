"""Helpers for the CIFAR-10 Keras teaching notebooks, on TensorFlow, JAX or PyTorch (Keras 3).

Read it in the order of the course. The teaching core, one module per step:

1. `cifar_utils.data`: the images and labels: loading (offline first), validation splits
   from the training set, batch pipelines (`tf.data` on TensorFlow), normalisation.
2. `cifar_utils.augment`: augmentation policies from Keras preprocessing layers, and the
   one training pipeline every run reads (`training_dataset`).
3. `cifar_utils.layers`: keras-io style blocks, `block(x, filters, ..., name=None) -> x`.
4. `cifar_utils.models`: the networks (`build_<arch>(input_shape, num_classes, ...)`),
   their parameters and FLOPs.
5. `cifar_utils.schedules`: learning-rate schedules.
6. `cifar_utils.recipes`: every training recipe as one dictionary of hyperparameters.
7. `cifar_utils.compiling`: how a recipe becomes a compiled model (optimiser, loss, schedule).
8. `cifar_utils.callbacks`: the Keras callbacks of a run (best model, logging, budgets).
9. `cifar_utils.training`: `train` (build, compile, fit, save) and `fine_tune`.
10. `cifar_utils.lr_finder`: the learning-rate range test.
11. `cifar_utils.budget`: fit a run into a wall-time budget.
12. `cifar_utils.evaluation`: predictions, metrics, confusion matrices, calibration, Grad-CAM.
13. `cifar_utils.tuning`: KerasTuner search and regularisation ablations.
14. `cifar_utils.plots`: the figures of every notebook.
15. `cifar_utils.inference`: classify new pictures with a trained model (`Classifier`);
    the `cifar-predict` command.
16. `cifar_utils.export`: SavedModel and TFLite exports and their comparison (TensorFlow).
17. `cifar_utils.web`: the upload-and-classify web demo; the `cifar-demo` command.

Beside it, what makes the core safe and repeatable, to read when you need it:

- `cifar_utils.paths`: every environment variable and default folder; the trained model.
- `cifar_utils.files`: opening a file that may be a FIFO or a device, without blocking.
- `cifar_utils.batch_files`: reading CIFAR-10's pickled batch files without running code.
- `cifar_utils.images`: any picture (format, mode, size) to the 32 x 32 RGB array a model takes.
- `cifar_utils.custom_objects`: the package's serializable layer and schedule.
- `cifar_utils.storage`: atomic writes; `load_model` in Keras's safe mode.
- `cifar_utils.keras_archives`: a `.keras` file's members and sizes checked before Keras reads it.
- `cifar_utils.runs`: a run's folder, its history, and resuming a killed run.
- `cifar_utils.backend`: which Keras backend runs (TensorFlow, JAX, PyTorch); what needs TensorFlow.
- `cifar_utils.device`: CPU/GPU detection, distribution strategy, mixed precision.
- `cifar_utils.distributed`: training across machines, where Keras's `fit` cannot yet.
- `cifar_utils.repro`: seeds and deterministic ops.
- `cifar_utils.reports`: the run facts recorded with each result; model cards.
- `cifar_utils.shipping`: ship a run's model with its card; find a model for the notebooks.
- `cifar_utils.cli`: the `cifar-train` command.
- `cifar_utils.checks`: the argument checks shared by the public functions.
- `cifar_utils.timing`: warm up, then the best of several timed runs.
- `cifar_utils.tf_logs`: keeps TensorFlow's C++ start-up lines out of notebooks.

`tests/test_imports.py` keeps the import graph free of cycles, and the modules that use
trained models (`evaluation`, `inference`, `export`, `web`) free of the training modules.

Importing the package is cheap; TensorFlow loads when a module that needs it does. Importing
it first applies `tf_logs.quiet_tensorflow()`, which must run before TensorFlow is imported
(set `CIFAR_TF_LOGS=1` to see all of TensorFlow's log lines), and checks that the Keras
backend chosen (`KERAS_BACKEND`, default TensorFlow) is installed, saying which extra to
install when it is not (`backend.check_installed`).
"""

from cifar_utils import backend as _backend
from cifar_utils import tf_logs as _tf_logs

_tf_logs.quiet_tensorflow()
_backend.check_installed()

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

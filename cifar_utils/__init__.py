"""Helpers for the CIFAR-10 Keras/TensorFlow teaching notebooks.

One module per concern:

- `cifar_utils.data`: loading (offline first), splits, `tf.data` pipelines, normalisation.
- `cifar_utils.augment`: named augmentation policies from Keras preprocessing layers.
- `cifar_utils.layers`: keras-io style layer stacks.
- `cifar_utils.models`: model builders, parameters and FLOPs.
- `cifar_utils.device`: CPU/GPU detection, distribution strategy, mixed precision.
- `cifar_utils.plots`: figures for exploring the data.
- `cifar_utils.repro`: seeds, quick mode, and the run facts recorded with each result.

Importing the package is cheap; TensorFlow loads when a module that needs it does.
"""

__version__ = "0.1.0"

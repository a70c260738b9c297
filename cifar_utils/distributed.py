"""Training across machines (`MultiWorkerMirroredStrategy`), where Keras 3's `fit` fails.

`training.train` calls `fit_multi_worker` instead of `model.fit` when `TF_CONFIG` names
several workers (`device.setup_devices` chose the strategy). One GPU, several GPUs of one
machine and the CPU all use `model.fit`. TensorFlow only (`tf.distribute`).
"""

from __future__ import annotations

import keras


def fit_multi_worker(
    model,
    strategy,
    train_ds,
    val_ds,
    epochs,
    callbacks,
    verbose=2,
    steps_per_epoch=None,
    initial_epoch=0,
):
    """`model.fit` across machines (`MultiWorkerMirroredStrategy`), which Keras 3's fit fails.

    Keras 3.15's fit averages per-replica values in ways that break across workers (it asks
    the strategy to reduce a whole (x, y) batch, and scalars along an axis they lack;
    keras-team/keras#20585, still open). This loop does what fit does with Keras's own
    `train_step` and `test_step` on every replica (gradients are all-reduced inside them),
    averages the logs and, after each epoch, the batch-norm statistics across workers, and
    drives the same callbacks, from `initial_epoch` as fit does. `get_next_as_optional`
    keeps the workers in step when their shares of the data differ by a batch. An endless
    `train_ds` (the "airbench" policy) is read by one iterator, `steps_per_epoch` batches
    per epoch; `val_ds` may be None (no validation).

    Returns:
        The `keras.callbacks.History` of the epochs run, as `fit` returns.
    """
    train_step = _replicated(strategy, model.train_step)
    test_step = _replicated(strategy, model.test_step)
    average_statistics = _statistics_averager(model, strategy)
    steps = steps_per_epoch or int(train_ds.cardinality())
    callback_list = keras.callbacks.CallbackList(
        list(callbacks),
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    endless = iter(strategy.experimental_distribute_dataset(train_ds)) if steps_per_epoch else None
    model.stop_training = False
    callback_list.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = _passes(strategy, train_ds, train_step, callback_list, endless, steps_per_epoch)
        average_statistics()
        model.reset_metrics()
        if val_ds is not None:
            val_logs = _passes(strategy, val_ds, test_step)
            logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    # Callbacks may set the weights at the end (Lookahead restores its slow copy, whose
    # batch-norm statistics were copied from this worker's own batches): average once more.
    average_statistics()
    return model.history  # the History that callback_list added, or the one in `callbacks`


def _replicated(strategy, step):
    """`step` (a Keras train or test step) run on every replica, its logs averaged."""
    import tensorflow as tf

    @tf.function
    def run(batch):
        logs = strategy.run(step, args=(batch,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    return run


def _statistics_averager(model, strategy):
    """A function that sets the model's batch-norm statistics to their mean across workers.

    Each worker updates them from its own batches; averaging after every epoch lets
    validation, checkpoints and every worker see the same model.
    """
    import tensorflow as tf

    statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    @tf.function
    def averaged():
        local = strategy.run(lambda: [tf.identity(v.value) for v in statistics])
        return [strategy.reduce("MEAN", value, axis=None) for value in local]

    def average():
        for variable, value in zip(statistics, averaged()):
            variable.assign(value)

    return average


def _passes(strategy, dataset, step, callback_list=None, iterator=None, limit=None) -> dict:
    """Runs `step` on the batches of `dataset` (or `limit` of `iterator`); the last logs."""
    logs, index = {}, 0
    iterator = iterator or iter(strategy.experimental_distribute_dataset(dataset))
    while limit is None or index < limit:
        batch = iterator.get_next_as_optional()
        if not batch.has_value():
            break
        if callback_list:
            callback_list.on_train_batch_begin(index)
        logs = step(batch.get_value())
        if callback_list:
            callback_list.on_train_batch_end(index, logs)
        index += 1
    return {name: float(value) for name, value in logs.items()}

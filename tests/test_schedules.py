"""PiecewiseLinear (cifar_utils.custom_objects), the recipes' schedules, linear decay."""

import doctest
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from cifar_utils import custom_objects, recipes, schedules
from cifar_utils.custom_objects import PiecewiseLinear


def test_piecewise_linear_values_and_serialisation():
    schedule = PiecewiseLinear([0, 10, 30], [0.1, 1.0, 0.0])
    values = [float(schedule(s)) for s in (0, 5, 10, 20, 30, 99)]
    np.testing.assert_allclose(values, [0.1, 0.55, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, PiecewiseLinear) and float(again(20)) == pytest.approx(0.5)


def test_piecewise_linear_from_config_round_trip():
    schedule = PiecewiseLinear([0, 5, 9], [0.0, 2.0, 1.0], name="tri")
    again = PiecewiseLinear.from_config(schedule.get_config())
    assert (
        again.get_config()
        == schedule.get_config()
        == {"boundaries": [0.0, 5.0, 9.0], "values": [0.0, 2.0, 1.0], "name": "tri"}
    )
    assert [float(again(s)) for s in (2.5, 7)] == pytest.approx([1.0, 1.5])


def test_the_docstring_example_runs():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    examples = 0
    globs = {"PiecewiseLinear": PiecewiseLinear}
    for test in finder.find(custom_objects.PiecewiseLinear, "PiecewiseLinear", globs=globs):
        examples += len(test.examples)
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert examples >= 2 and results.attempted == examples and results.failed == 0


@pytest.mark.parametrize(
    "args, pattern",
    [
        (([0], [1.0]), "at least 2"),
        (([0, 0], [1, 1]), "must increase"),
        (([0, 1], [1, -1]), ">= 0"),
    ],
)
def test_piecewise_linear_rejects_nonsense(args, pattern):
    with pytest.raises(ValueError, match=pattern):
        PiecewiseLinear(*args)


@pytest.mark.parametrize(
    "schedule, start, peak, end",
    [
        ("one_cycle", 0.01, 0.1, 0.0),
        ("triangle", 0.02, 0.1, 0.007),
        ("warmup_cosine", 0.0, 0.1, 0.0),
    ],
)
def test_schedules_start_peak_end(schedule, start, peak, end):
    recipe = recipes.get_recipe(
        "vgg", epochs=10, learning_rate=0.1, schedule=schedule, warmup_fraction=0.2
    )
    lr = schedules.make_schedule(recipe, steps_per_epoch=10)
    assert float(lr(0)) == pytest.approx(start, abs=1e-6)
    assert float(lr(20)) == pytest.approx(peak, rel=1e-5)
    assert float(lr(100)) == pytest.approx(end, abs=1e-6)
    assert schedules.make_schedule(recipes.get_recipe("vgg", schedule="constant"), 10) == 0.05


def test_every_recipe_schedule_is_known():
    assert {recipes.get_recipe(name).schedule for name in recipes.RECIPES} <= set(
        schedules.SCHEDULES
    )


def test_make_schedule_refuses_nonsense():
    recipe = recipes.get_recipe("fast")
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1; received 0"):
        schedules.make_schedule(recipe, 0)
    unknown = SimpleNamespace(
        **{**recipe.to_dict(), "schedule": "exponential"}
    )  # a Recipe refuses it
    with pytest.raises(ValueError, match="received 'exponential'"):
        schedules.make_schedule(unknown, 10)


def test_linear_decay_falls_to_zero():
    lr = schedules.linear_decay(0.01, 8)
    assert isinstance(lr, PiecewiseLinear)
    assert [float(lr(s)) for s in (0, 4, 8, 20)] == pytest.approx([0.01, 0.005, 0.0, 0.0])

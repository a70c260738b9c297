"""cifar_utils.budget: choosing widths and epochs from measured step times."""

import keras
import numpy as np
import pytest

from cifar_utils import budget, recipes


@pytest.fixture
def fake_steps(monkeypatch):
    """Step times by width, as if measured: the full airbench94 net takes 0.5 s a step."""
    times = {128: 1.2, 64: 0.5, 48: 0.3, 32: 0.15, 16: 0.05}
    measured = []

    def measure(recipe, x, y, setup=None, seed=0, **kwargs):
        widths = recipe.model_kwargs.get("widths")
        measured.append(widths)
        return times[widths[0]] if widths else 0.01

    monkeypatch.setattr(budget, "measure_step_seconds", measure)
    return measured


def data(n):
    return np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 10


@pytest.mark.parametrize(
    "minutes, widths, epochs",
    [
        (300, [128, 384, 384], 69),  # 195 steps x 1.2 s = 234 s an epoch: 0.9 x 18,000 s / 234
        (
            60,
            [64, 256, 256],
            33,
        ),  # the widest net would get 13 of its 15 epochs: airbench94's widths
        (3, [32, 128, 128], 5),  # 162 s: 1 epoch at 64, 2 at 48 (of 6), 5 at 32 (of 4)
        (1, [16, 64, 64], 5),  # the narrowest is taken whatever it gets
    ],
)
def test_the_widest_network_that_gets_its_epochs(fake_steps, minutes, widths, epochs):
    x, y = data(50_000)
    plan = budget.plan_budget("fast", x, y, budget_min=minutes)
    assert plan.recipe.model_kwargs["widths"] == widths and plan.recipe.epochs == epochs
    assert plan.recipe.model_kwargs["bias_scale"] == 8  # the recipe's other arguments stay
    assert plan.planned_seconds <= 0.9 * minutes * 60
    assert (
        fake_steps[0] == [64, 256, 256] and fake_steps[-1] == widths
    )  # the recipe's net, then the chosen one
    assert len(fake_steps) <= 2
    assert f"{epochs} epoch(s) at widths {widths}" in plan.describe()


def test_validation_counts_and_fixed_widths_are_kept(fake_steps):
    x, y = data(50_000)
    fixed = recipes.get_recipe("fast", model_kwargs={"widths": [32, 128, 128]})
    without = budget.plan_budget(fixed, x, y, 60)
    with_val = budget.plan_budget(fixed, x, y, 60, val_images=50_000)
    assert fake_steps == [[32, 128, 128], [32, 128, 128]]  # one measurement each, no other widths
    assert without.recipe.epochs == 100  # capped at MAX_EPOCHS
    assert (
        with_val.recipe.epochs < without.recipe.epochs or without.recipe.epochs == budget.MAX_EPOCHS
    )
    tight = budget.plan_budget(fixed, x, y, 2, val_images=50_000)
    loose = budget.plan_budget(fixed, x, y, 2)
    assert tight.recipe.epochs < loose.recipe.epochs  # validation passes take time too


def test_other_recipes_get_epochs_only_and_at_least_one(fake_steps):
    x, y = data(1000)
    plan = budget.plan_budget(
        "baseline_cnn", x, y, budget_min=0.05 / 60
    )  # less than one 0.07 s epoch
    assert plan.recipe.epochs == 1 and plan.recipe.arch == "baseline_cnn"
    assert fake_steps == [None]


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), True, "60"])
def test_a_budget_must_be_a_positive_number_of_seconds(bad):
    x, y = data(10)
    with pytest.raises(
        ValueError, match=r"budget_min \(minutes\) must be a positive finite number"
    ):
        budget.plan_budget("fast", x, y, bad)


def test_measuring_a_real_step(tiny_data):
    x, y, _, _ = tiny_data
    recipe = recipes.get_recipe("fast", batch_size=16, model_kwargs={"widths": [8, 8, 8]})
    seconds = budget.measure_step_seconds(recipe, x, y, steps=2, warmup=1)
    assert 0 < seconds < 10
    assert keras.config.dtype_policy().name == "float32"  # the policy is put back


def test_the_reference_widths_are_the_fast_networks_default():
    import inspect

    from cifar_utils.models import build_fast_net

    default = inspect.signature(build_fast_net).parameters["widths"].default
    assert tuple(default) == budget.REFERENCE_WIDTHS


def test_a_big_budget_trains_airbench96s_recipe_keeping_the_asked_changes(fake_steps):
    x, y = data(50_000)
    asked = recipes.get_recipe("fast", label_smoothing=0.1)
    plan = budget.plan_budget(asked, x, y, budget_min=20_000)
    chosen = plan.recipe
    assert chosen.name == "fast96" and chosen.model_kwargs["convs"] == 3
    assert chosen.model_kwargs["widths"] == [128, 512, 512] and chosen.epochs >= 40
    assert chosen.augmentation == "airbench96"
    assert chosen.learning_rate == recipes.get_recipe("fast96").learning_rate
    assert chosen.label_smoothing == 0.1  # the asked recipe's own change is kept
    assert plan.describe().startswith(f"budget 20000.0 min: fast96, {chosen.epochs} epoch(s)")
    assert set(plan.measured) == {"64x256x256", "fast96 128x512x512"}

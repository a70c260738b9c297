"""cifar_utils.recipes: every recipe is valid, overrides merge, nonsense is refused."""

import dataclasses
import json

import pytest

from cifar_utils import compiling, recipes
from cifar_utils.models import BUILDERS


def test_every_recipe_is_valid_and_builds():
    for name in recipes.RECIPES:
        recipe = compiling.check_recipe(name)
        assert recipe.name == name and recipe.arch in BUILDERS
        json.dumps(recipe.to_dict())


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"learning_rate": -0.1}, "learning_rate must be a positive finite number; received -0.1"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1; received 0"),
        ({"epochs": 0}, "epochs must be a whole number >= 1; received 0"),
        ({"epochs": 2.5}, "received 2.5"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, adam, adamw; received 'rmsprop'"),
        ({"momentum": 1.0}, r"momentum must be .*in \[0, 1\); received 1.0"),
        ({"label_smoothing": 1.5}, "received 1.5"),
        ({"learning_rat": 0.1}, r"Unknown recipe field\(s\) \['learning_rat'\]"),
        ({"whitening_images": -1}, "whitening_images must be a whole number >= 0; received -1"),
        ({"whitening_images": True}, "whitening_images must be a whole number >= 0; received True"),
        ({"whitening_images": 10.5}, "received 10.5"),
        ({"lookahead_steps": -1}, "lookahead_steps must be a whole number >= 0; received -1"),
        ({"lookahead_steps": True}, "lookahead_steps must be .*received True"),
        ({"nesterov": 1}, "nesterov must be True or False; received 1"),
        ({"whitening_bias_epochs": -1}, "whitening_bias_epochs must be a whole number >= 0"),
        ({"decay_biases": "yes"}, "decay_biases must be True or False; received 'yes'"),
        ({"model_kwargs": [8, 8]}, "model_kwargs must be a dict"),
    ],
)
def test_nonsense_hyperparameters_are_refused(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        recipes.get_recipe("fast", **overrides)


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        ({"schedule": "exp"}, "schedule must be one of .*received 'exp'"),
        ({"augmentation": "wobble"}, "Unknown augmentation policy 'wobble'"),
        ({"arch": "alexnet"}, "arch must be one of .*received 'alexnet'"),
        (
            {"tta": "crops"},
            "tta must be False, True .flip., 'flip' or 'multicrop'; received 'crops'",
        ),
        ({"augmentation": "airbench+cutout"}, "combines with no other policy"),
        (
            {"arch": "vgg", "model_kwargs": {}, "whitening_bias_epochs": 3},
            "whitening_bias_epochs must be 0: vgg has no whitening layer; received 3",
        ),
    ],
)
def test_names_of_code_are_checked_where_the_code_is(overrides, pattern):
    """`recipes` holds values only; `compiling.check_recipe` (called by `train` and
    `plan_budget`) checks the fields that name a network, schedule or augmentation."""
    recipe = recipes.get_recipe("fast", **overrides)
    if "model_kwargs" in overrides:  # get_recipe merges them; start from none instead
        recipe = dataclasses.replace(recipe, model_kwargs=overrides["model_kwargs"])
    with pytest.raises(ValueError, match=pattern):
        compiling.check_recipe(recipe)


@pytest.mark.parametrize("field", ["learning_rate", "weight_decay", "momentum", "label_smoothing"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), True])
def test_recipes_require_finite_numbers(field, value):
    with pytest.raises(ValueError, match=f"{field} must be a (positive )?finite number"):
        recipes.get_recipe("baseline_cnn", **{field: value})


def test_model_kwargs_overrides_merge_into_the_recipe():
    own = {"bias_scale": 8, "init": "pytorch", "dirac": True, "activation": "gelu"}
    recipe = recipes.get_recipe("fast", model_kwargs={"widths": [8, 16, 16]})
    assert recipe.model_kwargs == {**own, "widths": [8, 16, 16]}
    assert recipes.get_recipe("fast", model_kwargs={"bias_scale": 1}).model_kwargs == {
        **own,
        "bias_scale": 1,
    }
    assert recipes.RECIPES["fast"]["model_kwargs"] == own  # left untouched


def test_model_kwargs_unknown_to_the_builder_name_its_arguments():
    recipe = recipes.get_recipe("fast", model_kwargs={"widht": [8, 8, 8]})
    with pytest.raises(
        ValueError, match=r"\['widht'\] are not arguments of build_fast_net; it takes .*widths"
    ):
        compiling.check_recipe(recipe)


def test_only_the_fast_recipes_whiten():
    """The field that tells `compiling.build_recipe_model` to set the whitening filters."""
    assert {name: recipes.get_recipe(name).whitening_images for name in recipes.RECIPES} == {
        "baseline_cnn": 0,
        "vgg": 0,
        "resnet": 0,
        "fast": 5000,
        "fast95": 5000,
        "fast96": 5000,
    }
    assert recipes.get_recipe("fast", whitening_images=0).whitening_images == 0


def test_the_recipes_module_imports_no_code_of_the_package():
    """A configuration module: importing it loads neither TensorFlow nor another module."""
    import subprocess
    import sys

    code = (
        "import sys, cifar_utils.recipes; "
        "print(sorted(m for m in sys.modules if m.startswith(('cifar_utils.', 'tensorflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip() == "['cifar_utils.backend', 'cifar_utils.checks', 'cifar_utils.paths', "
        "'cifar_utils.recipes', 'cifar_utils.tf_logs']"
    )


def test_unknown_recipe():
    with pytest.raises(ValueError, match="Unknown recipe 'turbo'"):
        recipes.get_recipe("turbo")


def test_airbench95_and_96_are_the_fast_recipe_wider_and_longer():
    fast, fast95, fast96 = (recipes.get_recipe(n) for n in ("fast", "fast95", "fast96"))
    assert fast95.model_kwargs["widths"] == [128, 384, 384] and fast95.epochs == 15
    assert fast96.model_kwargs["widths"] == [128, 512, 512] and fast96.epochs == 40
    assert fast96.model_kwargs["convs"] == 3 and fast96.augmentation == "airbench96"
    assert fast95.learning_rate == pytest.approx(fast.learning_rate * 10 / 11.5)
    assert fast96.learning_rate == pytest.approx(fast.learning_rate * 9 / 11.5)
    same = {"batch_size", "momentum", "weight_decay", "label_smoothing", "lookahead_steps"}
    for field in same:
        assert getattr(fast95, field) == getattr(fast96, field) == getattr(fast, field), field

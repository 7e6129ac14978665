"""One recipe per task: everything task-specific, declared next to the task and looked up here.

A recipe (`tfm.recipes.base.TaskRecipe`) says how its task is built from a config, how its data is read,
batched and turned into plain text, how it is scored, served (export module and options) and printed by
`tfm predict`. The experiment, evaluation, export and predict code call `get_recipe(cfg.task.name)` (or
`recipe_for_model(model)`) instead of branching on the task's name.

The registry is explicit: adding a task is one new file in this package plus one line in `RECIPES`. Recipe
modules are imported on first use, so reading a config does not import TensorFlow.

Example:
    >>> get_recipe("span_qa").formats
    ('squad', 'tfds')
    >>> get_recipe("masked_lm").family
    'bert'
"""

import importlib

from tfm.errors import InputError

# task.name -> "module:Class". The order is the order of the list shown in error messages.
RECIPES = {
    "masked_lm": "tfm.recipes.masked_lm:MaskedLMRecipe",
    "causal_lm": "tfm.recipes.causal_lm:CausalLMRecipe",
    "text_classifier": "tfm.recipes.text_classifier:TextClassifierRecipe",
    "token_classifier": "tfm.recipes.token_classifier:TokenClassifierRecipe",
    "span_qa": "tfm.recipes.span_qa:SpanQARecipe",
    "multiple_choice": "tfm.recipes.multiple_choice:MultipleChoiceRecipe",
    "text_embedder": "tfm.recipes.text_embedder:TextEmbedderRecipe",
}

_LOADED = {}


def get_recipe(name):
    """The recipe of task `name` (a `TaskRecipe` instance).

    Raises:
        InputError: `name` is not a registered task (the message lists those that are).
    """
    if name not in _LOADED:
        if name not in RECIPES:
            raise InputError(f"unknown task {name!r}; the tasks are {list(RECIPES)}")
        module, _, cls = RECIPES[name].partition(":")
        _LOADED[name] = getattr(importlib.import_module(module), cls)()
    return _LOADED[name]


def all_recipes():
    """Every registered recipe, in `RECIPES` order."""
    return [get_recipe(name) for name in RECIPES]


def recipe_for_model(model):
    """The recipe whose task class `model` is an instance of (its most derived match).

    Raises:
        TypeError: no recipe serves `type(model)`.
    """
    by_class = {recipe.task_class(): recipe for recipe in all_recipes()}
    for cls in type(model).__mro__:
        if cls in by_class:
            return by_class[cls]
    raise TypeError(f"no task recipe for {type(model).__name__}; the tasks are {list(RECIPES)}")


def recipe_for_format(data_format):
    """The first recipe that reads `data.format` files (what a pretraining stage uses to get their text)."""
    for recipe in all_recipes():
        if data_format in recipe.formats:
            return recipe
    raise InputError(f"no task reads data.format={data_format!r}")


def corpus_texts(cfg, sources):
    """The text of `sources` as a ReadResult of tf.string documents (tokenizer training, MLM pretraining).

    Plain formats give their documents; labelled formats give their input text (the recipe's `texts_of`):
    a classification text (and pair), a NER sentence (words joined by spaces), a QA context and question,
    an MC context and choices. A format the task does not read (an MLM stage on a CoNLL file) is read by
    the first task that does.
    """
    recipe = get_recipe(cfg.task.name)
    if cfg.data.format not in recipe.formats:
        recipe = recipe_for_format(cfg.data.format)
    return recipe.corpus_texts(cfg, sources)


__all__ = ["RECIPES", "all_recipes", "corpus_texts", "get_recipe", "recipe_for_format", "recipe_for_model"]

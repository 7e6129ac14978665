"""One recipe per task: the registry is complete, nothing outside the recipes chooses behaviour by a task's
name, the package has no import cycles, and a task added as one recipe file plus one registry line trains,
evaluates, exports and predicts through the shared code."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from tfm import recipes
from tfm.recipes.base import TaskRecipe
from tfm.recipes.text_classifier import TextClassifierRecipe

TFM = Path(__file__).resolve().parents[1] / "tfm"
TASK_CLASSES = {"TextClassifier", "TokenClassifier", "SpanQA", "MaskedLM", "CausalLM", "MultipleChoice",
                "TextEmbedder"}
# Weight formats map each class to its counterpart in another library (DESIGN: they live in tfm/convert/),
# and the TFLite writer refuses what it cannot convert: neither chooses a task's behaviour.
ALLOWED = {"convert/keras_hub.py", "export/tflite.py"}


def _modules():
    for path in sorted(TFM.rglob("*.py")):
        yield path.relative_to(TFM).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def test_every_registered_task_has_a_complete_recipe():
    from tfm.tasks import Task

    assert list(recipes.RECIPES) == ["masked_lm", "causal_lm", "text_classifier", "token_classifier", "span_qa",
                                     "multiple_choice", "text_embedder"]
    for name in recipes.RECIPES:
        recipe = recipes.get_recipe(name)
        assert recipe.name == name and issubclass(recipe.task_class(), Task) and recipe.formats
        for method in ("build", "read_data", "dataset_fns", "corpus_texts", "evaluate", "serving_module",
                       "format_prediction"):
            assert getattr(type(recipe), method) is not getattr(TaskRecipe, method), (name, method)
    assert recipes.recipe_for_format("conll").name == "token_classifier"
    assert recipes.recipe_for_format("tsv").name == "text_classifier"
    with pytest.raises(recipes.InputError, match=r"unknown task 'ner'; the tasks are \['masked_lm'"):
        recipes.get_recipe("ner")


def test_no_module_outside_the_recipes_branches_on_a_task():
    found = []
    for name, tree in _modules():
        if name.startswith(("recipes/", "tasks/")) or name in ALLOWED:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [c.value for part in [node.left, *node.comparators] for c in ast.walk(part)
                             if isinstance(c, ast.Constant)]
                found += [(name, node.lineno, c) for c in constants if c in recipes.RECIPES]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                classes = {getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(node.args[1])}
                found += [(name, node.lineno, c) for c in classes & TASK_CLASSES]
    assert found == []


def test_the_package_has_no_import_cycles():
    """Every `import tfm...` (module level or inside a function) is an edge; the graph has no cycle."""
    names = {}
    for name, tree in _modules():
        module = "tfm." + name[:-3].replace("/", ".")
        names[module.removesuffix(".__init__")] = tree
    if "tfm" not in names:
        names["tfm"] = None

    def owner(target):
        while target and target not in names:
            target = target.rpartition(".")[0]
        return target

    graph = {m: set() for m in names}
    for module, tree in names.items():
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {owner(t) for t in targets if t.startswith("tfm")} - {module, ""}
    state, cycles = {}, []

    def visit(module, path):
        state[module] = "open"
        for other in sorted(graph[module]):
            if state.get(other) == "open":
                cycles.append(path[path.index(other):] + [other])
            elif other not in state:
                visit(other, path + [other])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
    assert "tfm.tasks" not in graph["tfm.convert.keras_hub_weights"] and "tfm.models" not in graph[
        "tfm.convert.keras_hub_weights"]  # what Backbone.from_preset(KerasHub dir) loads


class SentimentRecipe(TextClassifierRecipe):
    """A new task in one file: binary sentiment, label names fixed by the task, its own predict line."""

    name = "sentiment"

    def given_labels(self, cfg):
        return ["negative", "positive"]

    def format_prediction(self, row):
        return f"{row['label_name'].upper()} ({max(row['probabilities']):.2f})"


@pytest.mark.slow
def test_a_new_task_is_one_recipe_and_one_registry_line(tmp_path, monkeypatch, capsys):
    from tfm.cli import main
    from tfm.training.config import apply_overrides, ExperimentConfig
    from tfm.training.evaluation import evaluate_run
    from tfm.training.experiment import run_experiment

    monkeypatch.setitem(recipes.RECIPES, "sentiment", f"{__name__}:SentimentRecipe")  # the one line
    rows = [("a gorgeous witty film", "positive"), ("a dull tired mess", "negative")] * 40
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    cfg = apply_overrides(ExperimentConfig(), [
        f"output_dir={tmp_path / 'run'}", "task.name=sentiment", f"data.train=[{train}]", f"data.eval=[{train}]",
        "data.format=tsv", "data.text_column=sentence", "data.sequence_length=16", "data.tokenizer.vocabulary_size=200",
        "model.num_layers=1", "model.hidden_dim=16", "model.num_heads=2", "model.intermediate_dim=32",
        "trainer.steps=10", "trainer.batch_size=8", "trainer.eval_every=10",
        "trainer.peak_flops=1e12"])
    run_experiment(cfg, verbose=False)
    assert json.loads((tmp_path / "run" / "labels.json").read_text())["label_names"] == ["negative", "positive"]
    report = evaluate_run(str(tmp_path / "run"))
    assert report["num_examples"] == 80 and set(report["classes"]) >= {"negative", "positive"}
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "sm")]) == 0
    capsys.readouterr()
    texts = [t for t, _ in rows[:2]]
    assert main(["predict", str(tmp_path / "sm"), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()  # the new recipe's own line format, e.g. "POSITIVE (0.73)"
    assert len(lines) == 2 and all(line.split()[0] in ("POSITIVE", "NEGATIVE") for line in lines)
    # The served predictions score what `tfm evaluate` scored (the data is the two phrases, 40 times each).
    served = [line.split()[0].lower() for line in lines]
    assert report["accuracy"] == pytest.approx(np.mean([p == y for p, (_, y) in zip(served, rows[:2])]))

"""notebooks/: every notebook is the output-free pair of its .py, lints clean, and runs top to bottom.

CI runs each notebook with the small parameters below, injected after its `parameters` cell (papermill's
convention), on the real data in ../shared/data. A notebook states its own checks with `assert` (e.g. the
SavedModel equals the Keras model); the test also asserts the figures were drawn.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from tests.data_paths import SHARED_DATA, shared_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
sys.path.insert(0, str(ROOT / "tools"))
import notebooks as notebook_tool  # noqa: E402

# name -> (CI parameters, figures the run must draw). Sized so all notebooks together stay a few minutes.
CI_RUNS = {
    "01_pretrain_mlm": ({"STEPS": 30, "BATCH_SIZE": 16, "SEQUENCE_LENGTH": 32, "VOCABULARY_SIZE": 1000,
                         "TRAIN_SENTENCES": 3000, "EVAL_SENTENCES": 128, "EVALUATIONS": 2, "SHOW_TENSORBOARD": False}, 2),
    "02_finetune_classifier": ({"STEPS": 8, "BATCH_SIZE": 8, "SEQUENCE_LENGTH": 32, "EVALUATIONS": 2,
                                "DEV_EXAMPLES": 64, "SHOW_TENSORBOARD": False}, 2),
    # LEARNING_RATE 1e-7: a few steps at the real rate tag everything O, leaving the SavedModel check no entities.
    "03_ner": ({"STEPS": 4, "BATCH_SIZE": 8, "SEQUENCE_LENGTH": 64, "LEARNING_RATE": 1e-7, "EVALUATIONS": 1,
                "JIT_COMPILE": False, "DEV_SENTENCES": 32, "ZH_STEPS": 4, "ZH_SEQUENCE_LENGTH": 64, "ZH_LSTM_UNITS": 0,
                "ZH_DEV_SENTENCES": 32}, 3),
    "04_gpt_generation": ({"STEPS": 20, "BATCH_SIZE": 8, "SEQUENCE_LENGTH": 32, "VOCABULARY_SIZE": 500, "NUM_LAYERS": 1,
                           "HIDDEN_DIM": 32, "JIT_COMPILE": False, "LOG_EVERY": 5, "EVALUATIONS": 2,
                           "MAX_SENTENCES": 2000, "NEW_TOKENS": 8, "TIMING_RUNS": 2}, 2),
    "05_peft": ({"STEPS": 4, "BATCH_SIZE": 8, "SEQUENCE_LENGTH": 32, "DEV_EXAMPLES": 16, "JIT_COMPILE": False,
                 "RUN_METHODS": ["lora", "adalora", "prefix"]}, 2),
    "06_knowledge_base": ({}, 2),
    "07_distributed_tpu": ({"STEPS": 12, "KILL_AFTER_STEP": 4, "CHECKPOINT_EVERY": 4, "BATCH_SIZE": 8,
                            "SEQUENCE_LENGTH": 32, "NUM_LAYERS": 1, "VOCABULARY_SIZE": 600, "CORPUS_SENTENCES": 3000,
                            "SHOW_TENSORBOARD": False}, 1),
    "08_financial_sentiment": ({"TRAIN_SNIPPETS": 400, "EPOCHS": 20, "STREAM_TEXTS": 300, "WINDOW": 30}, 1),
}


def test_every_notebook_has_a_ci_run():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(CI_RUNS)


def test_ipynb_files_are_the_stripped_pairs_of_the_py_files():
    assert NOTEBOOKS, "no notebooks found"
    assert notebook_tool.problems() == []


def test_readme_lists_every_notebook_with_a_colab_link():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    repository = notebook_tool.REPOSITORY.removeprefix("https://github.com/")
    for source in NOTEBOOKS:
        assert f"https://colab.research.google.com/github/{repository}/blob/main/notebooks/{source.stem}.ipynb" in readme
        assert f'REPOSITORY = "{notebook_tool.REPOSITORY}"' in source.read_text(encoding="utf-8"), source.name


def test_notebooks_lint_clean():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is missing: it is a test dependency (setup.cfg [test])")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "E9,F", "--line-length",
                             "120", *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _with_parameters(notebook, values):
    import nbformat

    index = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return notebook


def _reads_shared_data(source):
    return "\nDATA_DIR = " in "\n" + source.read_text(encoding="utf-8")


def _execute(source, parameters, out):
    """Runs notebook `source` (its .ipynb) with `parameters` injected; writes the executed notebook to `out`."""
    import nbformat
    from nbclient import NotebookClient

    notebook = _with_parameters(nbformat.read(source.with_suffix(".ipynb"), as_version=4), parameters)
    for name in parameters:  # an injected name the notebook does not define would be silently ignored
        assert any(f"\n{name} = " in "\n" + cell.source for cell in notebook.cells if "parameters" in
                   cell.metadata.get("tags", [])), f"{source.name} has no parameter {name}"
    workdir = out.parent / source.stem
    workdir.mkdir()
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    nbformat.write(notebook, out)


@pytest.fixture(scope="module")
def executions(request, tmp_path_factory):
    """The selected notebooks' runs, two at a time in their own processes (much of a small run is single-threaded:
    imports, tokenizer training, tracing), started at the first notebook test; name -> Future of the process."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    selected = [item.callspec.params["source"] for item in request.session.items
                if item.originalname == "test_notebook_runs_top_to_bottom"]
    tmp = tmp_path_factory.mktemp("notebooks")

    def run(source):
        parameters, out = CI_RUNS[source.stem][0], tmp / f"{source.stem}.ipynb"
        if _reads_shared_data(source) and SHARED_DATA.exists():
            parameters = {**parameters, "DATA_DIR": str(SHARED_DATA)}
        done = subprocess.run([sys.executable, __file__, str(source), json.dumps(parameters), str(out)],
                              capture_output=True, text=True, timeout=900, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        return done, out

    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {source.stem: pool.submit(run, source) for source in selected}


@pytest.mark.slow
@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(source, executions):
    import nbformat

    if _reads_shared_data(source):
        shared_data()  # skips (with the reason) where the shared data is absent
    done, out = executions[source.stem].result()
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    notebook = nbformat.read(out, as_version=4)
    drawn = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert drawn == CI_RUNS[source.stem][1]


if __name__ == "__main__":  # one notebook run, in its own process: SOURCE PARAMETERS_JSON OUT
    import json

    _execute(pathlib.Path(sys.argv[1]), json.loads(sys.argv[2]), pathlib.Path(sys.argv[3]))

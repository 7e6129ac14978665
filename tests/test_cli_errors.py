"""Every user error of the `tfm` CLI ends in one line `tfm CMD: error: ...` and exit status 2; `tfm --help`
imports no TensorFlow; a TensorFlow command prints no start-up chatter."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
import yaml

from tests.export import builders
from tfm import cli
from tfm.cli import main
from tfm.training.config import DataConfig, ExperimentConfig, ModelConfig, TaskConfig, save_config
from tfm.training.experiment import LABELS_FILENAME, TOKENIZER_DIR, build_task

TFM = os.path.join(os.path.dirname(sys.executable), "tfm")
TINY_MODEL = {"family": "bert", "preset": "bert_tiny", "num_layers": 1, "hidden_dim": 16, "num_heads": 2,
              "intermediate_dim": 32, "dropout": 0.0}
ROWS = ["label\tsentence", "positive\ta gorgeous, witty film", "negative\ta dull and lifeless movie",
        "neutral\tthe film was shown on Monday"]


def _write_config(path, task, train, fmt, eval_=()):
    path.write_text(yaml.safe_dump({
        "output_dir": str(path.parent / f"run_{path.stem}"), "task": {"name": task}, "model": TINY_MODEL,
        "data": {"train": [str(path.parent / t) for t in train], "eval": [str(path.parent / e) for e in eval_],
                 "format": fmt, "sequence_length": 16, "tokenizer": {"vocabulary_size": 200}},
        "trainer": {"steps": 2, "batch_size": 2, "log_every": 1, "eval_every": 2, "checkpoint_every": 2,
                    "peak_flops": 1e11}}), encoding="utf-8")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Bad inputs next to a good text-classifier run dir (not trained: a saved initial checkpoint)."""
    d = tmp_path_factory.mktemp("cases")
    (d / "train.tsv").write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    (d / "dev.tsv").write_text("\n".join(ROWS) + "\n", encoding="utf-8")
    (d / "test.tsv").write_text("\n".join(ROWS[:3]) + "\n", encoding="utf-8")
    for name in ("empty.tsv", "empty.txt", "empty.conll", "empty.json", "empty.jsonl"):
        (d / name).write_bytes(b"")
    (d / "header.tsv").write_text("label\tsentence\n", encoding="utf-8")
    (d / "header.csv").write_text("label,sentence\n\n", encoding="utf-8")
    (d / "docstart.conll").write_text("-DOCSTART- -X- -X- O\n\n", encoding="utf-8")
    (d / "no_data.json").write_text('{"version": "1.1", "data": []}', encoding="utf-8")
    (d / "badutf.tsv").write_bytes(b"label\tsentence\npositive\tfine\nnegative\ta caf\xe9 film\n")
    (d / "badutf.txt").write_bytes(b"a good film\n\xff\xfe bad\n")
    (d / "badutf.json").write_bytes(b'{"data": [\n  {"title": "caf\xe9"}]}\n')
    (d / "badlabel.tsv").write_text("label\tsentence\npositive\tgood\nweird\tstrange\n", encoding="utf-8")
    (d / "unknown_key.yaml").write_text("trainer: {stepz: 2}\n", encoding="utf-8")
    (d / "bad.yaml").write_text("task: [unclosed\n", encoding="utf-8")
    for name, task, train, fmt in [("missing", "text_classifier", "missing.tsv", "tsv"),
                                   ("empty", "text_classifier", "empty.tsv", "tsv"),
                                   ("header", "text_classifier", "header.tsv", "tsv"),
                                   ("header_csv", "text_classifier", "header.csv", "csv"),
                                   ("badutf", "text_classifier", "badutf.tsv", "tsv"),
                                   ("mlm_empty", "masked_lm", "empty.txt", "text"),
                                   ("mlm_badutf", "masked_lm", "badutf.txt", "text"),
                                   ("conll_empty", "token_classifier", "empty.conll", "conll"),
                                   ("conll_docstart", "token_classifier", "docstart.conll", "conll"),
                                   ("squad_empty", "span_qa", "empty.json", "squad"),
                                   ("squad_no_data", "span_qa", "no_data.json", "squad"),
                                   ("squad_badutf", "span_qa", "badutf.json", "squad"),
                                   ("mc_empty", "multiple_choice", "empty.jsonl", "jsonl")]:
        _write_config(d / f"{name}.yaml", task, [train], fmt)
    _write_config(d / "good.yaml", "text_classifier", ["train.tsv"], "tsv")
    _write_config(d / "eval_empty.yaml", "text_classifier", ["train.tsv"], "tsv", ["header.tsv"])
    run = d / "run"
    cfg = ExperimentConfig(
        output_dir=str(run), task=TaskConfig(name="text_classifier", num_classes=3),
        model=ModelConfig(num_layers=1, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64),
        data=DataConfig(format="tsv", eval=[str(d / "dev.tsv")], sequence_length=builders.SEQUENCE_LENGTH))
    save_config(cfg, str(run))
    tokenizer = builders.wordpiece()
    tokenizer.save(run / TOKENIZER_DIR)
    (run / LABELS_FILENAME).write_text(json.dumps({"label_names": builders.LABEL_NAMES}), encoding="utf-8")
    task = build_task(cfg, tokenizer, builders.LABEL_NAMES, initialize=False)
    tf.train.Checkpoint(model=task).save(str(run / "checkpoints" / "ckpt"))
    return d


# (argv with {d} = the cases dir, what the one error line must say after "tfm CMD: error: ")
BAD_INPUTS = {
    "missing_config": (["train", "{d}/nope.yaml"], "{d}/nope.yaml: cannot read config: No such file or directory"),
    "unknown_config_key": (["train", "{d}/unknown_key.yaml"],
                           "{d}/unknown_key.yaml: trainer.stepz is not a valid key (did you mean 'steps'?)"),
    "invalid_yaml": (["train", "{d}/bad.yaml"], "{d}/bad.yaml: invalid YAML: "),
    "bad_set_value": (["train", "{d}/good.yaml", "--set", "trainer.steps=abc"],
                      "--set trainer.steps=abc: trainer.steps must be int, got 'abc' (str)"),
    "misspelt_learning_rate_multiplier": (
        ["train", "{d}/good.yaml", "--set", "trainer.learning_rate_multipliers.Kernel=2", "--set",
         "output_dir={d}/lr_typo"],
        "trainer.learning_rate_multipliers: ['Kernel'] match no trainable variable; variable paths look like"),
    "missing_train_file": (["train", "{d}/missing.yaml"], "{d}/missing.tsv: No such file or directory"),
    "empty_tsv": (["train", "{d}/empty.yaml"], "{d}/empty.tsv: has no examples (the file is empty)"),
    "header_only_tsv": (["train", "{d}/header.yaml"],
                        "{d}/header.tsv: has no examples (no data rows after the header)"),
    "header_only_csv": (["train", "{d}/header_csv.yaml"],
                        "{d}/header.csv: has no examples (every record was skipped: empty_line=1)"),
    "empty_eval_file": (["train", "{d}/eval_empty.yaml"], "{d}/header.tsv: has no examples (no data rows after"),
    "non_utf8_tsv": (["train", "{d}/badutf.yaml"],
                     "{d}/badutf.tsv:3: invalid UTF-8 at byte 14 of the line (bad bytes b'\\xe9'): b'negative\\ta caf"),
    "empty_text_corpus": (["train", "{d}/mlm_empty.yaml"], "{d}/empty.txt: has no examples (the file is empty)"),
    "non_utf8_text_corpus": (["train", "{d}/mlm_badutf.yaml"],
                             "{d}/badutf.txt:2: invalid UTF-8 at byte 0 of the line (bad bytes b'\\xff'): "
                             "b'\\xff\\xfe bad'"),
    "empty_conll": (["train", "{d}/conll_empty.yaml"], "{d}/empty.conll: has no examples (the file is empty)"),
    "docstart_only_conll": (["train", "{d}/conll_docstart.yaml"],
                            "{d}/docstart.conll: has no examples (every record was skipped: docstart=1)"),
    "empty_squad": (["train", "{d}/squad_empty.yaml"], "{d}/empty.json: has no examples (the file is empty)"),
    "squad_without_data": (["train", "{d}/squad_no_data.yaml"], "{d}/no_data.json: has no examples (no data records)"),
    "non_utf8_squad": (["train", "{d}/squad_badutf.yaml"],
                       "{d}/badutf.json:2: invalid UTF-8 at byte 16 of the line (bad bytes b'\\xe9'): "),
    "empty_multiple_choice": (["train", "{d}/mc_empty.yaml"], "{d}/empty.jsonl: has no examples (the file is empty)"),
    "evaluate_bad_label": (["evaluate", "{d}/run", "--data", "{d}/badlabel.tsv"],
                           "{d}/badlabel.tsv:3: label 'weird' not in label set ['negative', 'neutral', 'positive']"),
    "evaluate_missing_data": (["evaluate", "{d}/run", "--data", "{d}/nothere.tsv"],
                              "{d}/nothere.tsv: No such file or directory"),
    "evaluate_missing_run": (["evaluate", "{d}/no_run"], "{d}/no_run"),
    "export_missing_run": (["export", "{d}/no_run", "{d}/out"], "{d}/no_run"),
    "predict_missing_export": (["predict", "{d}/no_export", "a film"], "{d}/no_export: no saved_model.pb"),
    "predict_run_dir_as_export": (["predict", "{d}/run", "a film"], "{d}/run: no saved_model.pb"),
    "predict_missing_file": (["predict", "{d}/exported", "--file", "{d}/nofile.txt"],
                             "{d}/nofile.txt: No such file or directory"),
    "predict_non_utf8_file": (["predict", "{d}/exported", "--file", "{d}/badutf.txt"],
                              "{d}/badutf.txt:2: invalid UTF-8 at byte 0 of the line (bad bytes b'\\xff')"),
    "vocab_missing_corpus": (["vocab", "--corpus", "{d}/nope.txt", "--out", "{d}/v"], "{d}/nope.txt"),
    "vocab_non_utf8_corpus": (["vocab", "--corpus", "{d}/badutf.txt", "--out", "{d}/v"],
                              "{d}/badutf.txt:2: invalid UTF-8 at byte 0"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_ends_in_one_line_and_status_2(name, cases, capsys):
    argv, expected = BAD_INPUTS[name]
    capsys.readouterr()
    assert main([a.format(d=cases) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"tfm {argv[0]}: error: {expected.format(d=cases)}"), err


def test_predict_file_with_crlf_line_ends_predicts_as_lf(cases, capsys):
    assert main(["export", str(cases / "run"), str(cases / "exported")]) == 0
    texts = ["a gorgeous, witty film", "a dull movie\twith tabs", "Paris 北京"]
    (cases / "lf.txt").write_bytes("\n".join(texts).encode("utf-8") + b"\n")
    (cases / "crlf.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(texts).encode("utf-8") + b"\r\n\r\n")
    rows = {}
    for name in ("lf", "crlf"):
        capsys.readouterr()
        assert main(["predict", str(cases / "exported"), "--file", str(cases / f"{name}.txt"), "--json"]) == 0
        rows[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows["crlf"]] == texts  # no "\r" (nor BOM) reaches the model
    assert rows["crlf"] == rows["lf"]


def test_evaluate_on_other_data_names_the_report_after_it(cases, capsys):
    run = cases / "run"
    assert main(["evaluate", str(run)]) == 0
    dev_report = (run / "eval_report_dev.json").read_bytes()
    assert json.loads(dev_report)["num_examples"] == 3
    assert main(["evaluate", str(run), "--data", str(cases / "test.tsv")]) == 0
    assert f"report: {run / 'eval_report_test.json'}" in capsys.readouterr().out
    report = json.loads((run / "eval_report_test.json").read_text(encoding="utf-8"))
    assert (report["split"], report["data"], report["num_examples"]) == ("test", [str(cases / "test.tsv")], 2)
    assert (run / "eval_report_dev.json").read_bytes() == dev_report  # the dev report is untouched
    # Another file that is itself named dev.* gets its folder's name in front.
    assert main(["evaluate", str(run), "--data", str(cases / "dev.tsv")]) == 0
    assert {p.name for p in run.glob("eval_report_*.json")} == {
        "eval_report_dev.json", "eval_report_test.json", f"eval_report_{cases.name}_dev.json"}
    assert (run / "eval_report_dev.json").read_bytes() == dev_report


def test_help_imports_no_tensorflow():
    script = ("import sys, tfm.cli\n"
              "parser = tfm.cli.build_parser()\n"
              "for argv in [['--help']] + [[c, '--help'] for c in "
              "('train', 'vocab', 'quickstart', 'evaluate', 'bench', 'export', 'predict')]:\n"
              "    try:\n"
              "        parser.parse_args(argv)\n"
              "    except SystemExit:\n"
              "        pass\n"
              "print('tensorflow' in sys.modules, 'keras' in sys.modules, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "False False\n", done.stderr[-2000:]
    assert done.stdout.count("usage: tfm") == 8
    for command in ([TFM], [sys.executable, "-m", "tfm"]):  # the script, and `python -m tfm` (notebook kernels)
        shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
        assert (shown.returncode, shown.stderr) == (0, "")
        assert "{train,vocab,quickstart,evaluate,bench,index,export,predict}" in shown.stdout


def _env_without_tf_logging():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # the notice shows only with oneDNN on: make sure it is hidden, not absent
    return env


def test_tensorflow_commands_print_no_startup_chatter(cases):
    corpus = cases / "corpus.txt"
    corpus.write_text("the film was good\nthe film was bad\na gorgeous witty film\n" * 3, encoding="utf-8")
    done = subprocess.run([TFM, "vocab", "--corpus", str(corpus), "--size", "40", "--out", str(cases / "v40")],
                          capture_output=True, text=True, timeout=300, env=_env_without_tf_logging())
    assert done.returncode == 0, done.stderr[-3000:]
    noise = ("cuInit", "oneDNN", "cudart", "absl", "Traceback", "WARNING", "I0000", "E0000", "W0000")
    assert [line for line in done.stderr.splitlines() if any(n in line for n in noise)] == []
    assert re.fullmatch(r"wordpiece vocabulary of \d+ tokens written to .*\n", done.stdout), done.stdout
    # A user error from a fresh process: the one line, nothing else.
    failed = subprocess.run([TFM, "train", str(cases / "empty.yaml")], capture_output=True, text=True,
                            timeout=300, env=_env_without_tf_logging())
    assert (failed.returncode, failed.stderr) == (
        2, f"tfm train: error: {cases / 'empty.tsv'}: has no examples (the file is empty)\n")


def test_noise_filter_follows_tf_cpp_min_log_level():
    lines = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1796191171.175653    5477 port.cc:153] oneDNN custom operations are on.",
             "W0000 00:00:1796191171.175653    5477 some_file.cc:12] a warning",
             "E0000 00:00:1796191180.687702    5477 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
             "E0000 00:00:1796191180.687702    5477 other.cc:52] a real error",
             "Traceback (most recent call last):", "RuntimeError: failed call to cuInit in user code (oneDNN)"]
    kept = {level: [line for line in lines if not cli._is_tensorflow_noise(line, level)] for level in range(4)}
    assert kept[0] == lines  # the user asked for everything
    assert kept[1] == lines[2:3] + lines[4:]
    assert kept[2] == lines[4:]
    assert kept[3] == lines[5:]
    environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    with cli.quiet_tensorflow(environ):  # tensorflow is already imported here: only the setting is read
        pass
    assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}  # a user's own setting wins
    from absl import logging as absl_logging

    levels = logging.getLogger("tensorflow").level, absl_logging.get_verbosity()
    environ = {}
    try:
        with cli.quiet_tensorflow(environ):
            assert (environ, logging.getLogger("tensorflow").level) == ({"TF_CPP_MIN_LOG_LEVEL": "2"}, logging.ERROR)
            assert absl_logging.get_verbosity() == absl_logging.ERROR
    finally:
        logging.getLogger("tensorflow").setLevel(levels[0])
        absl_logging.set_verbosity(levels[1])

"""The `tfm` command line: parse arguments, then call the library.

Every parser is declared without importing TensorFlow, so `tfm --help` and `tfm CMD --help` answer at once;
a command imports TensorFlow (quietly, see `quiet_tensorflow`) and its own module only when it runs. A user
error ends in one line, `tfm CMD: error: ...`, and exit status 2.
"""

import argparse
import contextlib
import importlib
import logging
import os
import re
import sys
import threading

from tfm.errors import InputError

# Modules whose `add_commands(subparsers)` adds more subcommands; they must not import TensorFlow at import
# time (each parser sets `func`, called with the parsed args, returning an exit code or None).
COMMAND_MODULES = ("tfm.benchmark", "tfm.retrieval.commands")

# Errors a user fixes (a file, key or value named in the message): one line and exit status 2, no traceback.
USER_ERRORS = (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               FileExistsError, FloatingPointError)  # FloatingPointError: NaN/Inf loss

# TensorFlow's C++ start-up lines come before absl logging is initialised, so TF_CPP_MIN_LOG_LEVEL does not
# hold them back (the oneDNN notice and the CUDA stub line even print twice, once per loaded library); the
# CUDA probe's "failed call to cuInit" and oneDNN's fallback notices are ERRORs on every CPU-only machine.
_TF_NOISE = re.compile(r"oneDNN|cudart_stub\.cc|failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory|"
                       r"cpu_feature_guard\.cc|computation_placer")
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] ")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def _is_tensorflow_noise(line, min_level):
    """Whether a stderr line is TensorFlow C++ log noise at `min_level` (TF_CPP_MIN_LOG_LEVEL: 1 = no INFO,
    2 = no WARNING, 3 = no ERROR; the CUDA-probe and oneDNN notices go from 1 up). Other lines are kept."""
    if min_level < 1:
        return False
    if line.rstrip("\n") == _ABSL_PREAMBLE:
        return True
    absl = _ABSL_LINE.match(line)
    return bool(absl) and ("IWEF".index(absl.group(1)) < min_level or bool(_TF_NOISE.search(line)))


@contextlib.contextmanager
def _filtered_stderr(min_level):
    """Send file descriptor 2 through a pipe that drops `_is_tensorflow_noise` lines (TensorFlow's C++ code
    writes to the descriptor directly, so `sys.stderr` cannot catch it)."""
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb") as pipe:
            for raw in pipe:
                if not _is_tensorflow_noise(raw.decode("utf-8", "replace"), min_level):
                    try:
                        os.write(terminal, raw)
                    except OSError:  # closed after the command (a child process kept the pipe open)
                        return

    thread = threading.Thread(target=pump, name="tfm-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes the pipe's last write end: the pump sees EOF and ends
        thread.join(timeout=10)
        os.close(terminal)


@contextlib.contextmanager
def quiet_tensorflow(environ=os.environ):
    """Run a command without TensorFlow's start-up and CPU-only chatter.

    `TF_CPP_MIN_LOG_LEVEL` decides (default 2; a user's own value wins, and at 0 nothing is hidden): from 1 up,
    C++ log lines below the level and the CUDA-probe/oneDNN notices are dropped from stderr; from 2 up,
    TensorFlow's and absl's Python loggers show errors only (no deprecation warnings).

    Args:
        environ: the environment to read and default (os.environ).
    """
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        min_level = int(environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        min_level = 0
    if min_level >= 2:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    if "tensorflow" in sys.modules or min_level < 1:  # in-process use (TF already up), or the user wants it all
        yield
        return
    with _filtered_stderr(min_level):
        yield


def _lazy(module, name):
    """A command function that imports `module` only when the command runs."""

    def run(args):
        return getattr(importlib.import_module(module), name)(args)

    return run


def _train(args):
    from tfm.training.config import load_config
    from tfm.training.experiment import run_experiment

    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(args.config, overrides)
    metrics, _ = run_experiment(cfg)
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def _vocab(args):
    from tfm.data import build_vocab

    tokenizer = build_vocab(args.corpus, tokenizer_type=args.type, vocabulary_size=args.vocabulary_size, out_dir=args.out,
                            lowercase=not args.cased, max_unique_chars=args.max_unique_chars)
    print(f"{args.type} vocabulary of {tokenizer.vocabulary_size} tokens written to {args.out}")


def _quickstart(args):
    from tfm.quickstart import run_quickstart

    return run_quickstart(overrides=args.set or [])


def _add_evaluate(commands):
    evaluate = commands.add_parser("evaluate", help="Score a run's latest checkpoint; print and save the report.")
    evaluate.add_argument("run_dir", help="a tfm train output dir")
    evaluate.add_argument("--data", nargs="+", metavar="PATH", help="labelled files (default: the config's data.eval)")
    evaluate.add_argument("--split", help="report name: RUN_DIR/eval_report_<split>.json. Default: 'dev' for the "
                                          "config's data.eval; with --data, the file stems joined by '+' (e.g. "
                                          "--data test.tsv -> eval_report_test.json), never overwriting the dev report")
    evaluate.set_defaults(func=_lazy("tfm.training.evaluation", "evaluate_command"))


def _add_export(commands):
    export = commands.add_parser("export", help="Export a run dir as a raw-text SavedModel (or TFLite).")
    export.add_argument("run_dir", help="run dir written by `tfm train`")
    export.add_argument("export_dir", help="output: EXPORT_DIR/<version>/saved_model.pb (TF Serving layout)")
    export.add_argument("--format", choices=["saved_model", "tflite", "hf", "adapter"], default="saved_model",
                        help="hf: a Hugging Face model directory (config.json, model.safetensors, tokenizer files); "
                             "adapter: only a peft run's adapter and head (adapter_config.json, "
                             "adapter_model.safetensors)")
    export.add_argument("--version", type=int, help="SavedModel version (default: latest + 1)")
    export.add_argument("--merge-adapter", action="store_true", help="peft runs: fold the LoRA / AdaLoRA update "
                                                                     "into the base kernels before exporting")
    export.add_argument("--quantize", choices=["int8", "int8_weight_only", "bfloat16"], help="int8 weights in the "
                        "SavedModel: int8 = W8A8 dynamic (int8 activations per token), int8_weight_only = float "
                        "activations; bfloat16 = bfloat16 weights and compute (the classifier head stays float32); "
                        "with --format tflite, int8 = TFLite's dynamic-range quantization")
    export.add_argument("--num-candidates", type=int, help="masked_lm: fill-mask candidates per mask (default 5)")
    export.add_argument("--top-k", type=int, help=argparse.SUPPRESS)  # the old name of --num-candidates
    export.add_argument("--num-beams", type=int, help="causal_lm: also export a beam_search signature with this "
                                                      "many beams")
    export.add_argument("--max-new-tokens", type=int, help="causal_lm: most tokens per request (default "
                                                           "min(64, sequence_length // 2))")
    export.add_argument("--doc-stride", type=int, help="span_qa: tokens between window starts (default 128)")
    export.add_argument("--max-query-length", type=int, help="span_qa: question tokens kept (default 64)")
    export.add_argument("--max-answer-length", type=int, help="span_qa: longest answer in tokens (default 30)")
    export.add_argument("--max-windows", type=int, help="span_qa: windows searched per question (default 128)")
    export.add_argument("--allow-no-answer", action="store_true", help="span_qa: SQuAD v2 empty answers")
    export.set_defaults(func=_lazy("tfm.export.commands", "export_command"))

    predict = commands.add_parser("predict", help="Run an export on texts (tab-separated fields for pairs).")
    predict.add_argument("export_dir", help="directory written by `tfm export`")
    predict.add_argument("texts", nargs="*", help="inputs; question<TAB>context for QA, context<TAB>choice... "
                                                  "for multiple choice")
    predict.add_argument("--file", help="more inputs, one per line (UTF-8; blank lines skipped; \\n or \\r\\n ends)")
    predict.add_argument("--json", action="store_true", help="one JSON object per input")
    predict.add_argument("--signature", default="serving_default", help="e.g. embed")
    predict.add_argument("--max-new-tokens", type=int, help="causal_lm")
    predict.add_argument("--temperature", type=float, help="causal_lm: 0 = greedy (default)")
    predict.add_argument("--top-k", type=int, help="causal_lm: sample among the k most likely (0 = off)")
    predict.add_argument("--top-p", type=float, help="causal_lm: nucleus mass (1 = off)")
    predict.add_argument("--seed", type=int, help="causal_lm: sampling seed (default 0)")
    predict.set_defaults(func=_lazy("tfm.export.commands", "predict_command"))


def build_parser():
    """The `tfm` argument parser (imports no TensorFlow)."""
    parser = argparse.ArgumentParser(prog="tfm", description="TensorFlow/Keras NLP model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="Train from a YAML config (resumes when the run dir has checkpoints).")
    train.add_argument("config", help="YAML experiment config, e.g. configs/bert_tiny_mlm.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. trainer.steps=2000")
    train.add_argument("--output-dir", help="run dir (same as --set output_dir=DIR)")
    train.set_defaults(func=_train)

    vocab = commands.add_parser("vocab", help="Train a tokenizer vocabulary on text files.")
    vocab.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                       help="text (one document a line), .jsonl, or .tsv/.csv (their text column)")
    vocab.add_argument("--type", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    vocab.add_argument("--vocabulary-size", "--size", type=int, default=8000, help="tokens in the vocabulary")
    vocab.add_argument("--out", required=True, metavar="DIR")
    vocab.add_argument("--cased", action="store_true", help="keep case (WordPiece)")
    vocab.add_argument("--max-unique-chars", type=int, default=None, metavar="N",
                       help="WordPiece alphabet size: rarer characters become [UNK] (default max(1000, size // 2))")
    vocab.set_defaults(func=_vocab)

    quickstart = commands.add_parser("quickstart", help="Fetch real text, pretrain bert_tiny with MLM, report.")
    quickstart.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the quickstart config")
    quickstart.set_defaults(func=_quickstart)

    _add_evaluate(commands)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands)
    _add_export(commands)
    return parser


def _one_line(error):
    """The message of a user error on one line (YAML errors, for one, span several)."""
    if isinstance(error, OSError) and error.filename is not None:
        message = f"{error.filename}: {error.strerror}"
    else:
        message = str(error)
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv=None):
    args = build_parser().parse_args(argv)
    with quiet_tensorflow():
        try:
            return args.func(args) or 0
        except USER_ERRORS as error:
            # Bad input: say what and where, without a traceback.
            print(f"tfm {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())

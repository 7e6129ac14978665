"""The `tfm` command line: parse arguments, then call the library."""

import argparse
import importlib
import sys

# Subcommands that live beside their feature: each module defines `add_commands(subparsers)`, and each
# parser it adds sets `func` (called with the parsed args; returns an exit code or None).
COMMAND_MODULES = ("tfm.training.evaluation", "tfm.benchmark", "tfm.export.commands")


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

    tokenizer = build_vocab(args.corpus, tokenizer_type=args.type, vocab_size=args.size, out_dir=args.out,
                            lowercase=not args.cased)
    print(f"{args.type} vocabulary of {tokenizer.vocabulary_size} tokens written to {args.out}")


def _quickstart(args):
    from tfm.quickstart import run_quickstart

    return run_quickstart(overrides=args.set or [])


def build_parser():
    parser = argparse.ArgumentParser(prog="tfm", description="TensorFlow/Keras NLP model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="Train from a YAML config (resumes when the run dir has checkpoints).")
    train.add_argument("config", help="YAML experiment config, e.g. configs/bert_tiny_mlm.yaml")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. trainer.steps=2000")
    train.add_argument("--output-dir", help="run dir (same as --set output_dir=DIR)")
    train.set_defaults(func=_train)

    vocab = commands.add_parser("vocab", help="Train a tokenizer vocabulary on text files.")
    vocab.add_argument("--corpus", nargs="+", required=True, metavar="FILE", help="text (one document a line) or .jsonl")
    vocab.add_argument("--type", choices=["wordpiece", "sentencepiece"], default="wordpiece")
    vocab.add_argument("--size", type=int, default=8000, help="vocabulary size")
    vocab.add_argument("--out", required=True, metavar="DIR")
    vocab.add_argument("--cased", action="store_true", help="keep case (WordPiece)")
    vocab.set_defaults(func=_vocab)

    quickstart = commands.add_parser("quickstart", help="Fetch real text, pretrain bert_tiny with MLM, report.")
    quickstart.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the quickstart config")
    quickstart.set_defaults(func=_quickstart)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from tfm.training.config import ConfigError

    try:
        return args.func(args) or 0
    except (ConfigError, FileNotFoundError) as error:
        # Bad input: say what and where, without a traceback.
        print(f"tfm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

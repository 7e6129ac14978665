"""The `tfm` command line: parse arguments, then call the library."""

import argparse
import sys


def _quickstart(args):
    from tfm.quickstart import run_quickstart

    return run_quickstart()


def build_parser():
    parser = argparse.ArgumentParser(prog="tfm", description="TensorFlow/Keras NLP model zoo.")
    commands = parser.add_subparsers(dest="command", required=True)
    quickstart = commands.add_parser("quickstart", help="Run the main job end to end on real data.")
    quickstart.set_defaults(func=_quickstart)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

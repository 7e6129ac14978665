"""`tfm export` and `tfm predict` (registered through `tfm.cli.COMMAND_MODULES`)."""

import json
import sys

# Export options each task accepts (`--top-k` means fill-mask candidates here, sampling in predict).
TASK_OPTIONS = {
    "text_classifier": (),
    "token_classifier": (),
    "multiple_choice": (),
    "masked_lm": ("top_k",),
    "causal_lm": ("max_new_tokens",),
    "span_qa": ("doc_stride", "max_query_length", "max_answer_length", "max_windows", "allow_no_answer"),
}


def export_run(run_dir, export_dir, format="saved_model", version=None, **options):
    """Export the latest checkpoint of a training run dir (what `tfm export` does).

    Args:
        run_dir: a run dir written by `tfm train` (read with `tfm.training.experiment.load_run`).
        export_dir: output directory (SavedModel versions, or the .tflite file).
        format: "saved_model" or "tflite" (TextClassifier with WordPiece only).
        version: optional int SavedModel version.
        **options: task options (None = default); those the run's task does not take are ignored.

    Returns:
        Path of the written version directory or .tflite file.
    """
    from tfm.export.saved_model import export_saved_model
    from tfm.export.tflite import export_tflite
    from tfm.training.experiment import load_run

    run = load_run(run_dir)
    task_name, sequence_length = run.config.task.name, run.config.data.sequence_length
    if format == "tflite":
        if task_name != "text_classifier":
            raise ValueError(f"--format tflite supports text_classifier runs only, this run is {task_name}")
        if run.config.data.text_pair_column is not None:
            raise ValueError("--format tflite supports single-text classifiers only; this run uses text pairs")
        return export_tflite(run.task, run.tokenizer, export_dir, sequence_length, run.label_names)
    task_options = {k: v for k, v in options.items() if k in TASK_OPTIONS[task_name] and v is not None}
    if task_name == "text_classifier":
        task_options["text_pair"] = run.config.data.text_pair_column is not None
    if task_name == "causal_lm":
        task_options.setdefault("max_new_tokens", min(64, sequence_length // 2))
    return export_saved_model(run.task, run.tokenizer, export_dir, sequence_length, label_names=run.label_names,
                              version=version, **task_options)


def _export(args):
    try:
        path = export_run(args.run_dir, args.export_dir, args.format, args.version, top_k=args.top_k,
                          max_new_tokens=args.max_new_tokens, doc_stride=args.doc_stride,
                          max_query_length=args.max_query_length, max_answer_length=args.max_answer_length,
                          max_windows=args.max_windows, allow_no_answer=args.allow_no_answer or None)
    except (ValueError, FileExistsError) as error:
        print(f"tfm export: error: {error}", file=sys.stderr)
        return 2
    print(f"exported to {path}")
    return 0


def _predict(args):
    from tfm.export.predict import Predictor, format_prediction

    rows = list(args.texts)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            rows.extend(line.rstrip("\n") for line in f if line.strip())
    if not rows:
        print("tfm predict: error: give texts as arguments or --file", file=sys.stderr)
        return 2
    predictor = Predictor(args.export_dir)
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "seed": args.seed}
    try:
        results = predictor.predict(rows, signature=args.signature, **settings)
    except ValueError as error:
        print(f"tfm predict: error: {error}", file=sys.stderr)
        return 2
    for row, result in zip(rows, results):
        if args.json:
            print(json.dumps({"input": row, **result}, ensure_ascii=False))
        else:
            print(format_prediction(predictor.task, result, args.signature))
    return 0


def add_commands(subparsers):
    """Add `export` and `predict` to the `tfm` subcommand parsers."""
    export = subparsers.add_parser("export", help="Export a run dir as a raw-text SavedModel (or TFLite).")
    export.add_argument("run_dir", help="run dir written by `tfm train`")
    export.add_argument("export_dir", help="output: EXPORT_DIR/<version>/saved_model.pb (TF Serving layout)")
    export.add_argument("--format", choices=["saved_model", "tflite"], default="saved_model")
    export.add_argument("--version", type=int, help="SavedModel version (default: latest + 1)")
    export.add_argument("--top-k", type=int, help="masked_lm: fill-mask candidates per mask (default 5)")
    export.add_argument("--max-new-tokens", type=int, help="causal_lm: most tokens per request (default "
                                                           "min(64, sequence_length // 2))")
    export.add_argument("--doc-stride", type=int, help="span_qa: tokens between window starts (default 128)")
    export.add_argument("--max-query-length", type=int, help="span_qa: question tokens kept (default 64)")
    export.add_argument("--max-answer-length", type=int, help="span_qa: longest answer in tokens (default 30)")
    export.add_argument("--max-windows", type=int, help="span_qa: windows searched per question (default 128)")
    export.add_argument("--allow-no-answer", action="store_true", help="span_qa: SQuAD v2 empty answers")
    export.set_defaults(func=_export)

    predict = subparsers.add_parser("predict", help="Run an export on texts (tab-separated fields for pairs).")
    predict.add_argument("export_dir", help="directory written by `tfm export`")
    predict.add_argument("texts", nargs="*", help="inputs; question<TAB>context for QA, context<TAB>choice... "
                                                  "for multiple choice")
    predict.add_argument("--file", help="more inputs, one per line")
    predict.add_argument("--json", action="store_true", help="one JSON object per input")
    predict.add_argument("--signature", default="serving_default", help="e.g. embed")
    predict.add_argument("--max-new-tokens", type=int, help="causal_lm")
    predict.add_argument("--temperature", type=float, help="causal_lm: 0 = greedy (default)")
    predict.add_argument("--top-k", type=int, help="causal_lm: sample among the k most likely (0 = off)")
    predict.add_argument("--top-p", type=float, help="causal_lm: nucleus mass (1 = off)")
    predict.add_argument("--seed", type=int, help="causal_lm: sampling seed (default 0)")
    predict.set_defaults(func=_predict)

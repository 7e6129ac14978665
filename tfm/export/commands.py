"""`tfm export` and `tfm predict`: what the commands run (their parsers are declared in `tfm.cli`)."""

import json
import sys

from tfm.errors import InputError

def export_run(run_dir, export_dir, format="saved_model", version=None, merge_adapter=False, quantize=None,
               **options):
    """Export the latest checkpoint of a training run dir (what `tfm export` does).

    Args:
        run_dir: a run dir written by `tfm train` (read with `tfm.training.load_run`).
        export_dir: output directory (SavedModel versions, or the .tflite file).
        format: "saved_model", "tflite" (TextClassifier with WordPiece only) or "hf" (a Hugging Face model
            directory: BERT backbones, masked LM, text / token classifiers, GPT-2 causal LM) or "adapter" (only
            a PEFT run's adapter and head: HF PEFT's files for LoRA on BERT, tfm's for the other methods and for
            adapters that also train the backbone's LayerNorms or biases).
        version: optional int SavedModel version.
        merge_adapter: bool, fold a PEFT run's LoRA / AdaLoRA update into the kernels first (the export then
            computes as a plain model); "hf" exports of LoRA runs always merge.
        quantize: optional `tfm.compression` mode (`"int8"`, `"int8_weight_only"`) applied before a SavedModel
            export (after any merge), or `"bfloat16"` (`tfm.compression.cast_weights`); with format "tflite", "int8" is TFLite's dynamic-range quantization.
        **options: task options (None = default); those the run's task does not take are ignored (the
            task's recipe lists them: `tfm.recipes.get_recipe(name).export_options`).

    Returns:
        Path of the written version directory or .tflite file.
    """
    from tfm.export.saved_model import export_saved_model
    from tfm.export.tflite import export_tflite
    from tfm.recipes import get_recipe
    from tfm.training.run_dir import load_run

    run = load_run(run_dir)
    recipe, sequence_length = get_recipe(run.config.task.name), run.config.data.sequence_length
    task_options = recipe.export_kwargs(run.config, options)
    from tfm.peft.core import active_config

    peft = active_config(run.task)
    if format == "adapter":
        if peft is None:
            raise InputError(f"{run_dir} was not trained with a peft: section; there is no adapter to export")
        from tfm.peft.files import save_adapter

        # HF PEFT's LoRA file has no place for backbone LayerNorms or biases: those adapters go in tfm's.
        hf = (peft.method == "lora" and hasattr(run.task.backbone, "segment_embedding")
              and set(peft.also_train) <= {"head"})
        return save_adapter(run.task, export_dir, format="hf" if hf else "tfm")
    if peft is not None and (merge_adapter or format == "hf"):
        if peft.method not in ("lora", "adalora"):
            raise InputError(f"{run_dir}: a {peft.method} adapter cannot be merged into the base weights"
                             + ("; --format hf needs LoRA or AdaLoRA (use --format adapter)" if format == "hf" else ""))
        from tfm.peft.core import merge

        merge(run.task)
    if quantize is not None and format != "tflite":
        if format != "saved_model":
            raise InputError(f"--quantize applies to SavedModel and TFLite exports; --format {format} writes float "
                             f"weights")
        from tfm.compression import cast_weights, quantize as quantize_task

        run.task = cast_weights(run.task, quantize) if quantize == "bfloat16" else quantize_task(run.task, quantize)
    if format == "hf":
        return run.task.export_to_hf(export_dir, tokenizer=run.tokenizer, label_names=run.label_names)
    if format == "tflite":
        if not recipe.tflite:
            raise InputError(f"--format tflite supports text_classifier runs only, this run is {recipe.name}")
        if task_options.get("text_pair"):
            raise InputError("--format tflite supports single-text classifiers only; this run uses text pairs")
        if quantize not in (None, "int8"):
            raise InputError(f"--format tflite --quantize int8 is TFLite's dynamic-range int8; there is no "
                             f"{quantize} TFLite export")
        return export_tflite(run.task, run.tokenizer, export_dir, sequence_length, run.label_names, quantize=quantize)
    return export_saved_model(run.task, run.tokenizer, export_dir, sequence_length, label_names=run.label_names,
                              version=version, recipe=recipe, **task_options)


def export_command(args):
    """`tfm export RUN_DIR EXPORT_DIR [options]`."""
    try:
        num_candidates = args.num_candidates
        if args.top_k is not None:
            print("tfm export: --top-k is deprecated, use --num-candidates (--top-k is sampling in tfm predict)",
                  file=sys.stderr)
            num_candidates = args.top_k if num_candidates is None else num_candidates
        path = export_run(args.run_dir, args.export_dir, args.format, args.version,
                          merge_adapter=args.merge_adapter, quantize=args.quantize, num_candidates=num_candidates,
                          num_beams=args.num_beams,
                          max_new_tokens=args.max_new_tokens, doc_stride=args.doc_stride,
                          max_query_length=args.max_query_length, max_answer_length=args.max_answer_length,
                          max_windows=args.max_windows, allow_no_answer=args.allow_no_answer or None)
    except (ValueError, FileExistsError) as error:
        print(f"tfm export: error: {error}", file=sys.stderr)
        return 2
    print(f"exported to {path}")
    return 0


def read_inputs(path):
    """The non-blank lines of a `tfm predict --file` (UTF-8, BOM dropped, \\n or \\r\\n line ends removed).

    Args:
        path: the file.

    Raises:
        InputError: naming `path:line`, the byte offset and the bytes of the first invalid UTF-8.
    """
    from tfm.data.readers import _Problems, read_lines

    return [line for _, line in read_lines(path, _Problems(path, "raise")) if line.strip()]


def predict_command(args):
    """`tfm predict EXPORT_DIR [TEXT ...] [--file F] [options]`."""
    from tfm.export.predict import Predictor, format_prediction

    rows = list(args.texts)
    if args.file:
        rows.extend(read_inputs(args.file))
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

"""What int8 weights cost a causal-LM run in quality: validation perplexity of float32 and of both int8 modes, and
the fraction of greedy tokens identical to float32's over `--new-tokens` new tokens on `--prompts` real prompts
(the first `--prompt-tokens` tokens of the first sentences of the run's eval data), the fraction of prompts whose
continuation is identical throughout, and for the others the first new token that differs.

    python tools/int8_quality.py runs/gpt_tiny_clm [--batch 8] --json /tmp/int8_quality.json
"""

import argparse
import json
import sys


def agreement(tokens, reference):
    """How greedy continuations `tokens` `(prompts, new)` agree with `reference`: the fraction of identical tokens,
    the fraction of prompts identical throughout, and for each other prompt the first new token that differs. A
    continuation that differs once goes its own way after, so the last two say whether a low fraction is a few early
    splits or many.

    >>> agreement([[1, 2, 3], [4, 9, 6]], [[1, 2, 3], [4, 5, 6]])["first_difference"]
    [1]
    """
    import numpy as np

    same = np.asarray(tokens) == np.asarray(reference)
    return {"greedy_tokens_identical": float(np.mean(same)), "prompts_identical": float(np.mean(same.all(axis=1))),
            "first_difference": [int(np.argmin(row)) for row in same if not row.all()]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a causal_lm run dir written by `tfm train`")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=0, help="decode the prompts this many at a time (0: all at "
                        "once); int8 decodes up to 8 rows outside XLA on tfm's op, more in XLA")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf

    from tfm.benchmark import machine
    from tfm.compression import quantize
    from tfm.recipes import get_recipe
    from tfm.training.run_dir import load_run

    results = {"machine": machine(), "run_dir": args.run_dir, "batch": args.batch, "modes": {}}
    reference = None
    for mode in (None, "int8", "int8_weight_only"):
        run = load_run(args.run_dir)
        if mode:
            quantize(run.task, mode)
        report = get_recipe(run.config.task.name).evaluate(run, run.config.data.eval)
        sentences = []
        for path in run.config.data.eval:
            with open(path, encoding="utf-8") as f:
                sentences += [line.strip() for line in f if line.strip()]
        prompts = []
        for sentence in sentences:
            ids = run.tokenizer.tokenize(tf.constant([sentence])).flat_values.numpy().tolist()
            if len(ids) >= args.prompt_tokens:
                prompts.append(ids[:args.prompt_tokens])
            if len(prompts) == args.prompts:
                break
        batch = args.batch or len(prompts)
        tokens = np.concatenate([run.task.generate(prompts[i:i + batch], max_new_tokens=args.new_tokens)["token_ids"]
                                 for i in range(0, len(prompts), batch)])[:, args.prompt_tokens:]
        name = mode or "float32"
        row = {"perplexity": float(report["perplexity"])}
        if reference is None:
            reference = tokens
        else:
            row.update(agreement(tokens, reference))
            row["perplexity_change_percent"] = 100 * (row["perplexity"] / results["modes"]["float32"]["perplexity"] - 1)
        results["modes"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

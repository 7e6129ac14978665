"""tfm against KerasHub, side by side in one run (the same as `tfm bench`; logic in `tfm/benchmark.py`).

Usage:
    python tools/benchmark.py [--cases train_bert_mini,train_bert_base,train_gpt2_small,generate_b1,generate_b8]
        [--json results.json] [--repeats N] [--steps N] [--dtype float32|mixed_bfloat16] [--tiny]
"""

import sys

from tfm.benchmark import main

if __name__ == "__main__":
    sys.exit(main())

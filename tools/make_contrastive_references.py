"""Writes tests/tasks/references/contrastive.json: sentence-transformers' MultipleNegativesRankingLoss (PyTorch)
on fixed embeddings, with the gradients, for the parity test of `tfm.tasks.contrastive`.

Run with a Python that has `sentence-transformers` and `torch` (CPU build), e.g.
    python -m venv /tmp/ref && /tmp/ref/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /tmp/ref/bin/pip install sentence-transformers numpy
    /tmp/ref/bin/python tools/make_contrastive_references.py
The embeddings come from a seeded NumPy generator, so the test rebuilds them without reading them from here.
"""

import json
import os

import numpy as np
import sentence_transformers
import torch
from sentence_transformers.losses import MultipleNegativesRankingLoss

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "tasks", "references", "contrastive.json")
BATCH, DIM, SEED = 6, 8, 1234

# name -> (columns: anchors + positives [+ negatives], MNRL keyword arguments)
CASES = {
    "pairs": (2, {"scale": 20.0}),
    "hard_negatives": (3, {"scale": 20.0}),
    "symmetric": (2, {"scale": 20.0, "directions": ("query_to_doc", "doc_to_query"),
                      "partition_mode": "per_direction"}),
    "scale_5": (2, {"scale": 5.0}),
}


def embeddings(columns):
    """The test's inputs: `columns` blocks of (BATCH, DIM) float32 normals, seeded."""
    rng = np.random.default_rng(SEED + columns)
    return rng.normal(size=(columns * BATCH, DIM)).astype("float32")


def main():
    results = {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
               "batch": BATCH, "dim": DIM, "seed": SEED, "cases": {}}
    for name, (columns, kwargs) in CASES.items():
        stacked = torch.tensor(embeddings(columns), requires_grad=True)
        loss_fn = MultipleNegativesRankingLoss(model=None, **kwargs)
        blocks = list(torch.split(stacked, BATCH))
        loss = loss_fn.compute_loss_from_embeddings(blocks, labels=None)
        loss.backward()
        results["cases"][name] = {"columns": columns, "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in kwargs.items()},
                                  "loss": float(loss), "grad": stacked.grad.numpy().astype(float).tolist()}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {OUT}: " + ", ".join(f"{n} {c['loss']:.6f}" for n, c in results["cases"].items()))


if __name__ == "__main__":
    main()

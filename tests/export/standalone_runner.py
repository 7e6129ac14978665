"""Runs requests against SavedModels in a process that imports only tensorflow and tensorflow_text.

Usage: python standalone_runner.py QUEUE_DIR
The process starts at once (its imports overlap the exports) and answers batches as they arrive: it reads
QUEUE_DIR/requests_0.pkl, requests_1.pkl, ... in order, waiting for each, until a batch is `None`. Each request is
`{"dir", "signature", "inputs": {name: numpy value}}`. QUEUE_DIR/results.pkl then holds every request's outputs,
in order, as numpy arrays (or the error text), plus the names of any tfm / keras_hub modules that got imported.
"""

import os
import pickle
import sys
import time

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)


def _batches(queue_dir):
    index = 0
    while True:
        path = os.path.join(queue_dir, f"requests_{index}.pkl")
        while not os.path.exists(path):  # the writer renames a finished file into place
            time.sleep(0.05)
        with open(path, "rb") as f:
            batch = pickle.load(f)
        if batch is None:
            return
        yield batch
        index += 1


def main(queue_dir):
    models, results = {}, []
    for batch in _batches(queue_dir):
        for request in batch:
            if request["dir"] not in models:
                models[request["dir"]] = tf.saved_model.load(request["dir"])
            function = models[request["dir"]].signatures[request["signature"]]
            try:
                outputs = function(**{k: tf.constant(v) for k, v in request["inputs"].items()})
                results.append({k: v.numpy() for k, v in outputs.items()})
            except Exception as error:  # reported per request, so one failure does not hide the others
                results.append({"error": f"{type(error).__name__}: {error}"[:2000]})
    imported = sorted(m for m in sys.modules if m.split(".")[0] in ("tfm", "keras_hub"))
    with open(os.path.join(queue_dir, "results.pkl"), "wb") as f:
        pickle.dump({"results": results, "forbidden_modules": imported}, f)


if __name__ == "__main__":
    main(sys.argv[1])

"""Runs requests against SavedModels in a process that imports only tensorflow and tensorflow_text.

Usage: python standalone_runner.py REQUESTS.pkl RESULTS.pkl
Each request is `{"dir", "signature", "inputs": {name: numpy value}}`; results hold each request's outputs
as numpy arrays (or the error text), plus the names of any tfm / keras_hub modules that got imported.
"""

import pickle
import sys

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops)


def main(requests_file, results_file):
    with open(requests_file, "rb") as f:
        requests = pickle.load(f)
    models, results = {}, []
    for request in requests:
        if request["dir"] not in models:
            models[request["dir"]] = tf.saved_model.load(request["dir"])
        function = models[request["dir"]].signatures[request["signature"]]
        try:
            outputs = function(**{k: tf.constant(v) for k, v in request["inputs"].items()})
            results.append({k: v.numpy() for k, v in outputs.items()})
        except Exception as error:  # reported per request, so one failure does not hide the others
            results.append({"error": f"{type(error).__name__}: {error}"[:2000]})
    imported = sorted(m for m in sys.modules if m.split(".")[0] in ("tfm", "keras_hub"))
    with open(results_file, "wb") as f:
        pickle.dump({"results": results, "forbidden_modules": imported}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

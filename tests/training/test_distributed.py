"""Real tf.distribute strategies: MirroredStrategy on 2 logical CPUs, MultiWorkerMirroredStrategy with 2
local worker processes over localhost. Each trains MaskedLM and CausalLM a few steps, bare and with a PEFT
method (AdaLoRA's rank allocation, prefix tuning); replicas/workers
must hold identical weights, and losses must equal a single-device run with the same global batch."""

import json
import os
import sys

import numpy as np
import pytest

from tests.helpers import free_ports, start_process, wait_process, wait_processes
from tests.training.toy_training import TASKS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_toy(mode, out, workdir, env=None):
    return start_process([sys.executable, "-m", "tests.training.toy_training", mode, str(out), str(workdir)],
                         f"{out}.log", cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The single-device and Mirrored runs, started together: both are mostly single-threaded tracing, so on two
    cores they take little longer than one."""
    tmp = tmp_path_factory.mktemp("toy")
    procs = {mode: _run_toy(mode, tmp / f"{mode}.npz", tmp / mode) for mode in ("single", "mirrored")}
    yield tmp, procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _result(started, mode):
    tmp, procs = started
    if procs[mode].returncode is None:
        wait_process(procs[mode], 400)
    return np.load(tmp / f"{mode}.npz")


@pytest.fixture(scope="module")
def single(started):
    return _result(started, "single")


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device(single, started):
    mirrored = _result(started, "mirrored")
    for task in TASKS:
        assert int(mirrored[f"{task}_replicas"]) == 2
        np.testing.assert_array_equal(mirrored[f"{task}_weights_0"], mirrored[f"{task}_weights_1"])
        np.testing.assert_allclose(mirrored[f"{task}_losses"], single[f"{task}_losses"], rtol=1e-5)
        np.testing.assert_allclose(mirrored[f"{task}_weights_0"], single[f"{task}_weights_0"], atol=1e-5)
        assert single[f"{task}_losses"][-1] < single[f"{task}_losses"][0]  # it learns


def _run_workers(tmp_path, name, workdirs, envs=({}, {}), timeout=400):
    """Two local workers of one MultiWorkerMirrored cluster (fresh ports), waited on together; their npz results."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(2)]}
    procs = [
        _run_toy("multi_worker", tmp_path / f"{name}{i}.npz", workdirs[i],
                 {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}), **envs[i]})
        for i in range(2)
    ]
    wait_processes(procs, timeout)
    return [np.load(tmp_path / f"{name}{i}.npz") for i in range(2)]


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_matches_single_device(single, tmp_path):
    # trainer.mixed_precision is `auto`, and worker 1 is told its CPU has fast bf16 units (worker 0 keeps the
    # suite's TFM_BF16_UNITS=0): each resolves `auto` on its own CPU, and they must agree on float32.
    workers = _run_workers(tmp_path, "w", [tmp_path / "w0", tmp_path / "w1"], ({}, {"TFM_BF16_UNITS": "1"}))
    for task in TASKS:
        assert [str(w[f"{task}_policy"]) for w in workers] == ["float32", "float32"]
        np.testing.assert_array_equal(workers[0][f"{task}_weights_0"], workers[1][f"{task}_weights_0"])
        np.testing.assert_allclose(workers[0][f"{task}_losses"], single[f"{task}_losses"], rtol=1e-5)
        np.testing.assert_allclose(workers[0][f"{task}_weights_0"], single[f"{task}_weights_0"], atol=1e-5)
    # Only the chief (worker 0) keeps checkpoints; the other worker's temporary copy is removed.
    assert (tmp_path / "w0" / "mlm" / "checkpoints" / "checkpoint").exists()
    assert not (tmp_path / "w1" / "mlm" / "checkpoints" / ".worker_1").exists()


@pytest.mark.slow
def test_multi_worker_run_killed_after_a_checkpoint_resumes_on_every_worker(single, tmp_path):
    # Both workers share one run dir, as on a shared file system. The first launch stops (and saves) after step 2
    # of 4; the second resumes every worker from the chief's checkpoint. (Workers once restored from their own
    # copies, which are deleted after each save: the second worker restarted at step 0 and the collectives hung.)
    def launch(stop_at, name):
        env = {"TOY_STOP_AT": str(stop_at), "TOY_TASKS": "mlm"}
        return _run_workers(tmp_path, name, [tmp_path / "shared"] * 2, (env, env), timeout=300)

    first = launch(2, "first")
    assert len(first[0]["mlm_losses"]) == 2
    resumed = launch(4, "resumed")
    for worker in resumed:
        assert len(worker["mlm_losses"]) == 2  # steps 3 and 4 only: both workers resumed at step 2
        np.testing.assert_allclose(worker["mlm_losses"], single["mlm_losses"][2:], rtol=1e-5)
        np.testing.assert_allclose(worker["mlm_weights_0"], single["mlm_weights_0"], atol=1e-5)

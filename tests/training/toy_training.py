"""A few deterministic training steps of MaskedLM, CausalLM and TextEmbedder (in-batch negatives gathered across
replicas), for the distributed tests.

Run as a script: `python -m tests.training.toy_training MODE OUT.npz`, MODE in
`single` (default strategy), `mirrored` (2 logical CPUs), `multi_worker` (TF_CONFIG set by the caller).
Writes each task's losses, weights (per replica for mirrored) and resolved precision policy to OUT.npz.
`TOY_STOP_AT=N` stops after step N (of the same 4-step schedule) and saves, so a second run resumes;
`TOY_TASKS=mlm` trains one task.
"""

import os
import sys

import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 8
STEPS = 4
TASKS = ("mlm", "clm", "mlm_adalora", "clm_prefix", "embed")


def toy_dataset(task, per_replica_batch, ctx, n=64):
    """Fixed random examples; sharded by example so the global batch holds the same examples anywhere."""
    task = task.split("_")[0]
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 60, (n, 12)).astype("int32")
    if task == "embed":  # contrastive pairs: the positive is the anchor with 4 tokens replaced
        positives = ids.copy()
        positives[:, 4:8] = rng.integers(5, 60, (n, 4))
        ds = tf.data.Dataset.from_tensor_slices((ids, positives))
        if ctx is not None and ctx.num_input_pipelines > 1:
            ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)

        def stack(anchors, positives):  # the contrastive layout: (B, 2, T), labels unused zeros
            rows = tf.stack([anchors, positives], 1)
            x = {"token_ids": rows, "segment_ids": tf.zeros_like(rows), "padding_mask": tf.ones_like(rows)}
            return x, tf.zeros(tf.shape(anchors)[:1], tf.int32)

        return ds.repeat().batch(per_replica_batch, drop_remainder=True).map(stack)
    if task == "mlm":
        positions = np.stack([rng.choice(12, 3, replace=False) for _ in range(n)]).astype("int32")
        labels = np.take_along_axis(ids, positions, 1)
        masked = ids.copy()
        np.put_along_axis(masked, positions, 4, 1)
        weights = np.ones_like(labels, "float32")
        weights[::3, 2] = 0.0  # uneven token counts across examples: the mean must be global
        x = {"token_ids": masked, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids),
             "mask_positions": positions}
    else:
        mask = np.ones_like(ids)
        mask[::4, 9:] = 0
        x, labels, weights = {"token_ids": ids[:, :-1], "padding_mask": mask[:, :-1]}, ids[:, 1:], mask[:, 1:].astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, labels, weights))
    if ctx is not None and ctx.num_input_pipelines > 1:
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    return ds.repeat().batch(per_replica_batch, drop_remainder=True)


def model_fn(task):
    """`mlm` / `clm`, or with a PEFT method: `mlm_adalora` (rank allocation inside the step), `clm_prefix`."""
    import tfm

    if task.endswith("_adalora"):
        return tfm.peft.apply(model_fn(task[:-8]), method="adalora", rank=4, target_rank=2, targets=["query", "output"],
                              total_step=STEPS, delta_t=1)
    if task.endswith("_prefix"):
        return tfm.peft.apply(model_fn(task[:-7]), method="prefix", num_virtual_tokens=3)
    if task in ("mlm", "embed"):
        backbone = tfm.models.BertBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
                                           intermediate_dim=32, max_sequence_length=16, dropout=0.0)
        return tfm.tasks.MaskedLM(backbone) if task == "mlm" else tfm.tasks.TextEmbedder(backbone)
    backbone = tfm.models.GptBackbone(vocabulary_size=64, num_layers=2, num_heads=2, hidden_dim=16,
                                      intermediate_dim=32, max_sequence_length=16, dropout=0.0)
    return tfm.tasks.CausalLM(backbone)


def train(task, strategy, output_dir, grad_accum_steps=1, jit_compile=True):
    from tfm.training.config import TrainerConfig
    from tfm.training.trainer import Trainer

    cfg = TrainerConfig(steps=STEPS, batch_size=GLOBAL_BATCH, learning_rate=1e-2, log_every=1, eval_every=1000,
                        checkpoint_every=1000, grad_accum_steps=grad_accum_steps, jit_compile=jit_compile)
    trainer = Trainer(cfg, output_dir, lambda: model_fn(task), lambda b, c: toy_dataset(task, b, c),
                      strategy=strategy, verbose=False)
    losses = []
    stop_at = int(os.environ.get("TOY_STOP_AT", STEPS))
    while int(trainer.step.numpy()) < stop_at:
        loss, _, _ = trainer._train_step(trainer._iterator)
        losses.append(float(loss))
    trainer.save_checkpoint()  # every worker saves (a collective); only the chief's copy is kept
    replicas = [
        [np.asarray(r) for r in strategy.experimental_local_results(v.value)]
        for v in trainer.model.trainable_variables
    ]
    return np.array(losses), replicas, trainer.mixed_precision


def main(mode, out_path, output_dir):
    from tfm.training.strategy import create_strategy, split_logical_cpus

    if mode == "mirrored":
        split_logical_cpus(2)
    strategy = create_strategy({"single": "default"}.get(mode, mode))
    results = {}
    for task in os.environ.get("TOY_TASKS", ",".join(TASKS)).split(","):
        losses, replicas, policy = train(task, strategy, f"{output_dir}/{task}")
        results[f"{task}_losses"] = losses
        results[f"{task}_policy"] = np.array(policy)
        results[f"{task}_replicas"] = np.array(len(replicas[0]))
        for r in range(len(replicas[0])):
            results[f"{task}_weights_{r}"] = np.concatenate([v[r].ravel() for v in replicas])
    np.savez(out_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:4])

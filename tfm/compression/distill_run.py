"""A config's `distill:` section in a `tfm train` run: the teacher cache and the `Distillation` the Trainer optimizes.

The student's initialization and tokenizer are the run dir's (`tfm.training.run_dir.build_task`, `init_tokenizer`);
the losses live in `tfm.compression.distillation`.
"""

from tfm.errors import InputError


def teacher_run(cfg):
    """The teacher's loaded run dir (`distill.teacher`)."""
    from tfm.training.run_dir import load_run

    return load_run(cfg.distill.teacher)


def prepare(cfg, recipe, tokenizer, train_data, meta, train_fn):
    """`(train_fn, distillation_fn)` for the Trainer: batches carrying the teacher's logits (`distill.teacher_cache`,
    computed here once), and a function building the `Distillation` of a student inside the strategy scope."""
    from tfm.compression.distillation import Distillation, TeacherCache

    d = cfg.distill
    run = teacher_run(cfg)
    if run.config.task.name != cfg.task.name:
        raise InputError(f"distill.teacher={d.teacher!r} is a {run.config.task.name} run; this config trains "
                         f"task.name={cfg.task.name!r}")
    if run.label_names != meta.get("label_names"):
        raise InputError(f"distill.teacher={d.teacher!r} predicts the labels {run.label_names}, the training data "
                         f"has {meta.get('label_names')}: the soft targets would not line up")
    if run.tokenizer.vocabulary_size != tokenizer.vocabulary_size:
        raise InputError(f"the tokenizer has {tokenizer.vocabulary_size} tokens, the teacher's "
                         f"{run.tokenizer.vocabulary_size}: distillation needs the teacher's (leave "
                         f"data.tokenizer.path unset)")
    if d.augment_fraction:
        from tfm.compression.distillation import masked_augmentation

        if tokenizer.mask_id is None:
            raise InputError("distill.augment_fraction masks tokens, and the tokenizer has no [MASK] token")
        augment = masked_augmentation(tokenizer.mask_id, tokenizer.special_ids, d.augment_fraction,
                                      d.augment_mask_rate, seed=cfg.trainer.seed)
        plain_fn = train_fn
        train_fn = lambda batch_size, ctx: plain_fn(batch_size, ctx).map(augment)  # noqa: E731
    if d.teacher_cache:
        batches = recipe.labelled_dataset(cfg, tokenizer, train_data, cfg.trainer.batch_size, False)
        train_fn = TeacherCache.build(run.task, batches).attach_to(train_fn)

    def distillation_fn(student):
        layer_map = d.layer_map(run.task.backbone.num_layers, student.backbone.num_layers) if d.hidden_state_weight \
            else None
        teacher = None if d.teacher_cache else teacher_run(cfg).task  # built in the strategy's scope
        distillation = Distillation(teacher, d.temperature, d.student_loss_weight, d.hidden_state_weight, layer_map,
                                    d.attention_weight)
        try:
            distillation.check(student, run.task)
        except ValueError as error:
            raise InputError(f"distill: {error}") from None
        return distillation

    return train_fn, distillation_fn

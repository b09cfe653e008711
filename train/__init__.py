"""Training stage: the GPT family, tasks, Lightning loop and checkpoint writer.

Only `train.model` and `train.rundir` are imported by the observatory; neither needs Lightning."""

"""Training stage: the GPT family, tasks, Lightning loop and checkpoint writer.

The observatory imports only the model (`train.model`, `train.model_config`, `train.hooks`),
`train.rundir`, `train.durable` and `train.tokenizer`; none needs Lightning."""

"""Training: the DeepSpeed engine and config, the loop, fault handling, checkpoints, logs,
metrics, FLOP accounting and the held-out evaluation."""

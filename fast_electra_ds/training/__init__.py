"""Training: the DeepSpeed engine and config, a run's assembly and its loop, fault handling,
checkpoints and resume, logs, metrics, FLOP accounting and the held-out evaluation."""

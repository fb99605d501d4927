"""The Fast-ELECTRA method: models, masked-LM heads, sampling, the frozen generator, the
temperature curriculum, objectives and the training modes, and the kernel switch."""

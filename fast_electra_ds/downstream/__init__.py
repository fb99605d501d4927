"""After pretraining: export, GLUE fine-tuning, comparing runs."""

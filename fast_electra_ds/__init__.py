"""fast_electra_ds: ELECTRA-style pretraining with a frozen generator (Fast-ELECTRA), on
DeepSpeed."""

__version__ = "0.1.0"

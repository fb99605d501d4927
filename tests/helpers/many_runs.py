"""Several pretraining runs one after another in one launch (started once per rank by torchrun):

    many_runs.py RUNS.json      # [[key=value, ...], ...]: the `tiny` preset's overrides per run

For tests that need a fresh process per phase (the references, then their resumes) but not per
run: a launch of 2 ranks costs seconds of imports and rendezvous, a run of 8 tiny steps less.
Each run seeds everything it draws from its config, so the runs before it change nothing.
"""

import json
import sys

from fast_electra_ds.config import load_config
from fast_electra_ds.training import loop

for overrides in json.loads(open(sys.argv[1]).read()):
    cfg = load_config("tiny", overrides)
    cfg.validate()
    loop.pretrain(cfg)

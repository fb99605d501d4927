import sys

from fast_electra_ds.cli import main

sys.exit(main())

import sys

from fast_electra_ds.cli import main

# Guarded so that processes started with the "spawn" method (which re-import __main__) do not
# run the CLI again.
if __name__ == "__main__":
    sys.exit(main())

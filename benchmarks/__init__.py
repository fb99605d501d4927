"""The benchmarks: scripts run from the repository root (`python benchmarks/<script>.py`), the
parts they share (machine.py: what results name the machine by; suite/: bench.py's modules) and
their results (results/). The library never imports from here."""

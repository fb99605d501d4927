"""Helpers the test modules import (tests/ is on pytest's pythonpath, see pyproject.toml), and
fault_run.py, a script that test_faults.py runs in a child process."""

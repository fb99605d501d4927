"""The benchmark suite's parts; benchmarks/bench.py runs them (its doc says what is measured).

  workload.py    the timed shape (Spec), its run config and synthetic masked batches
  modes.py       the benchmarked modes: the library's electra and fast-electra, DiscOnly, the
                 electra-pytorch peer; each built into a DeepSpeed engine (BenchMode)
  measure.py     FLOP counting, interleaved timing, the memory child processes
  cost_model.py  the analytic FLOPs (ours, the paper's accounting) and memory of a step
  report.py      Markdown (templates/) and CSV from the measurements and the cost model
  report_memory.py  its memory section; report_tables.py: CSV rows, tables, number formats
  plots.py       the report's figures
"""

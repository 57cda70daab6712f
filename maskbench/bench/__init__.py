"""Side-by-side speed benchmark of masking strategies (``maskbench bench``)."""

from maskbench.bench.run import BenchResult, CaseResult, run_benchmark

__all__ = ["BenchResult", "CaseResult", "run_benchmark"]

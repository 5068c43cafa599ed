"""Benchmarks on a real pretrained model: the workload-drift benchmark (issue 3)."""

"""Benchmarks: load tests against real servers, and the pipeline at scale; results in
bench/results/."""

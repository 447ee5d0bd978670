"""Benchmarks: load tests against real servers; results in bench/results/."""

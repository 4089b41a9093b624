"""diffloom benchmarks: `make bench` (bench/run.py) writes bench/results.md and its plots."""

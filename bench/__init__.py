"""Benchmarks, run by hand (not tests): `python bench/turn_latency.py --help`."""

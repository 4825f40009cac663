"""Benchmarks (`pulseseal bench` reuses them); a package so `bench.producers` is not the `producers` package."""

"""Benchmark environments: external benchmarks wrapped as generators, simulators, scorers and policies."""

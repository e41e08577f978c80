"""Measurement: retrieval and answer evaluation, benchmarks, model comparison, load tests."""

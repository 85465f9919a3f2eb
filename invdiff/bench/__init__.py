"""Benchmarks: operators, prior quality, solver overhead, exact posteriors, tasks against deepinv."""

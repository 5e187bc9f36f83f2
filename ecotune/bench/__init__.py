"""Benchmarks: a synthetic landscape, replay of recorded evaluation tables, reports."""

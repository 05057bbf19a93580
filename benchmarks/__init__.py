"""Benchmarks of the fast paths against the reference paths (not part of the test suite)."""

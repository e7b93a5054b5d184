"""Benchmarks: ``python -m bench.NAME [--quick]`` or ``nasplat bench NAME``.

Each module has ``main(argv) -> int``, prints its figures and the machine, and records
its table in bench/RESULTS.md.
"""

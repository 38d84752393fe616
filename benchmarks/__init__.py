"""Benchmarks: scripts that print figures measured side by side, never timed tests.

Run one with ``python -m benchmarks NAME [--small]`` (see ``benchmarks/__main__.py``);
``tests/test_benchmarks.py`` runs each at tiny sizes so that they cannot rot.
"""

"""Side-by-side speed benchmarks: jdl against flax + optax, same work, one process.

``python -m benchmarks.run --help`` for the command line; ``benchmarks/README.md`` for
what is measured and how to read the numbers.
"""

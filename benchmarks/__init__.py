"""kdsearch's benchmark suite: one entry point, one subcommand a benchmark.

    python -m benchmarks list                  # every benchmark, one a line: name and purpose
    python -m benchmarks NAME [ARGS]           # run one (python -m benchmarks NAME --help)
    python -m benchmarks report --out BENCHMARKS.md    # BENCHMARKS.md from the result files

Run from the repository root with kdsearch importable. Shared parts: `harness` (the timer, the
result writer, synthetic data), `students` (the fixed students by name), `suite` (the list).
Results live in benchmarks/results/, one folder (or file) per measured run.
"""

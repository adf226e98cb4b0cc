"""The benchmarks: `python -m jobs.bench.NAME [--smoke-test]`; their figures and commands are in README.md here."""

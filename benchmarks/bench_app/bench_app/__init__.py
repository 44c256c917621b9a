"""The benchmark app (benchmarks/stack_bench.py): deployed unchanged to the stock and the collection stack."""

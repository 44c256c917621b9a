"""Example Celery app of vpsstack.celery, used by the molecule tests, `make demo` and the benchmarks."""

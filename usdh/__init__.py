"""usdh-bench: unsupervised deep image hashing, with the baselines and the benchmark around it."""

__version__ = "0.1.0"

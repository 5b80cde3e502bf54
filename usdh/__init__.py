"""usdh-bench: unsupervised deep image hashing, with the baselines and the benchmark around it."""

from usdh._omp import choose_spin_count

# before anything loads torch or numba: their OpenMP runtime reads the setting once, at load
choose_spin_count()

__version__ = "0.1.0"

"""Reimplemented hashing baselines, all with the face of :class:`usdh.hasher.BaseHasher`."""

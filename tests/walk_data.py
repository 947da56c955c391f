"""Sequences with an obvious next item, for the sequential models' tests."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def walks(
    n_users: int, n_items: int, *, seed: int, shortest: int = 5
) -> tuple[list[np.ndarray], sp.csr_matrix]:
    """Each user walks i -> i + 1 (mod ``n_items``) from a random start, ``shortest``
    to 8 steps: the sequences and their 0/1 users x items matrix."""
    rng = np.random.default_rng(seed)
    seqs = [
        (rng.integers(n_items) + np.arange(rng.integers(shortest, 9))) % n_items
        for _ in range(n_users)
    ]
    rows = np.repeat(np.arange(n_users), [len(s) for s in seqs])
    X = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, np.concatenate(seqs))), shape=(n_users, n_items)
    )
    return seqs, X

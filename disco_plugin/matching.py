"""Token-group <-> instance assignment: the Hungarian method, per item, on a detached similarity.

The prototype calls ``scipy.optimize.linear_sum_assignment``; SciPy is not a dependency of this
project, so :func:`linear_assignment` solves the same problem (minimum-cost assignment of every row of
an ``n x m`` cost matrix, ``n <= m``, to a distinct column) with the shortest-augmenting-path form of
the Hungarian method, ``O(n^2 m)``. Costs are at most ``16 x 16`` (instances x groups), so one call
takes microseconds; :func:`match_instances` makes one host transfer per micro-batch and loops over
the items on the CPU (the only per-item loop of the loss path; ``benchmarks/disco_losses.py`` times it).
"""

from __future__ import annotations

import numpy as np
import torch


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """``cost (n, m)`` with ``n <= m`` -> ``columns (n,)``: row ``i`` is assigned column ``columns[i]``,
    all distinct, minimising ``sum_i cost[i, columns[i]]``."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    if n > m:
        raise ValueError(f"linear_assignment: {n} rows but only {m} columns; transpose the cost")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # 1-based potentials u (rows), v (columns); owner[j]: the row holding column j (0: free)
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)
    way = np.zeros(m + 1, dtype=np.int64)
    for row in range(1, n + 1):
        owner[0] = row
        col = 0
        best = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:  # grow the alternating tree until a free column is reached
            used[col] = True
            current = owner[col]
            reduced = cost[current - 1] - u[current] - v[1:]
            free = ~used[1:]
            better = free & (reduced < best[1:])
            best[1:][better] = reduced[better]
            way[1:][better] = col
            candidates = np.where(free, best[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[owner[used]] += delta
            v[used] -= delta
            best[1:][free] -= delta
            col = nxt
            if owner[col] == 0:
                break
        while col:  # flip the augmenting path
            prev = way[col]
            owner[col] = owner[prev]
            col = prev
    columns = np.zeros(n, dtype=np.int64)
    assigned = np.nonzero(owner[1:])[0]
    columns[owner[1:][assigned] - 1] = assigned
    return columns


def match_instances(similarity: torch.Tensor, instance_mask: torch.Tensor) -> torch.Tensor:
    """``similarity (B, G, M)`` (groups x instance slots), ``instance_mask (B, M)`` -> ``group (B, M)``
    long: the group each real instance is paired with (maximum total similarity, each group at most
    once); padded slots get group 0 (callers mask them)."""
    sim = similarity.detach().float().cpu().numpy()
    counts = instance_mask.sum(1).tolist()
    groups = np.zeros(instance_mask.shape, dtype=np.int64)
    for item, count in enumerate(counts):
        if count:
            # real instances fill the first slots of each row
            groups[item, :count] = linear_assignment(-sim[item, :, :count].T)
    return torch.from_numpy(groups).to(similarity.device)

"""Independent brute-force references for search and metrics: slow, obvious, and sort-based."""

from __future__ import annotations

import itertools

import numpy as np


def distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances by unpacking to bits and counting mismatches."""
    qb = np.unpackbits(q, axis=1).astype(bool)
    db_b = np.unpackbits(db, axis=1).astype(bool)
    return (qb[:, None, :] != db_b[None, :, :]).sum(-1)


def relevance(ql: np.ndarray, dl: np.ndarray) -> np.ndarray:
    """(n_query, n_db) boolean relevance: same label, or at least one shared label."""
    if ql.ndim == 1:
        return ql[:, None] == dl[None, :]
    return (ql.astype(bool)[:, None, :] & dl.astype(bool)[None, :, :]).any(-1)


def ranking(drow: np.ndarray) -> np.ndarray:
    """Order by distance, then index (lexsort keys: last is primary)."""
    return np.lexsort((np.arange(drow.size), drow))


def ap_of_order(rel_in_order: np.ndarray) -> float:
    r = rel_in_order.astype(float)
    if r.sum() == 0:
        return 0.0
    prec = np.cumsum(r) / np.arange(1, r.size + 1)
    return float((prec * r).sum() / r.sum())


def ap_index(drow: np.ndarray, rel: np.ndarray, k: int) -> float:
    return ap_of_order(rel[ranking(drow)[:k]])


def tie_orders(drow: np.ndarray):
    """Every order that sorts by distance, ties in any order."""
    groups = [np.flatnonzero(drow == d) for d in np.unique(drow)]
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        yield np.concatenate(perms)


def ap_tie_average(drow: np.ndarray, rel: np.ndarray, k: int) -> float:
    """Expected AP@k over all tie orders, by enumeration (tiny inputs only)."""
    return float(np.mean([ap_of_order(rel[o[:k]]) for o in tie_orders(drow)]))


def precision_at_n_tie_average(drow: np.ndarray, rel: np.ndarray, n: int) -> float:
    return float(np.mean([rel[o[:n]].mean() for o in tie_orders(drow)]))


# -- GIST: a literal per-image, per-filter port of LMgist's MATLAB (1-based loops, float64) --------
def _pad_symmetric(img: np.ndarray, before: int, after: int) -> np.ndarray:
    """padarray(img, [p p], 'symmetric'), one sample at a time (mirror, edge repeated)."""
    n_rows, n_cols = img.shape
    out = np.empty((n_rows + before + after, n_cols + before + after))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            src = []
            for k, n, p in ((i, n_rows, before), (j, n_cols, before)):
                k = k - p
                while k < 0 or k >= n:
                    k = -k - 1 if k < 0 else 2 * n - 1 - k
                src.append(k)
            out[i, j] = img[src[0], src[1]]
    return out


def _matlab_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    fx, fy = np.meshgrid(np.arange(-n / 2, n / 2), np.arange(-n / 2, n / 2))
    return np.fft.fftshift(fx), np.fft.fftshift(fy)


def gist_lmgist(rgb: np.ndarray, orientations=(8, 8, 8, 8), blocks=4, fc=4.0, boundary=32):
    """GIST of one (H, W, 3) image, following LMgist.m / prefilt.m / createGabor.m / gistGabor.m."""
    img = rgb.astype(np.float64).mean(axis=2)
    img = img - img.min()
    if img.max() > 0:
        img = 255 * img / img.max()
    # prefilt.m
    w = 5
    s1 = fc / np.sqrt(np.log(2))
    x = np.log(img + 1)
    x = _pad_symmetric(x, w, w)
    sn, sm = x.shape
    n = max(sn, sm)
    n = n + n % 2
    x = _pad_symmetric(x, 0, n - sn)[:n, :n] if n != sn else x
    fx, fy = _matlab_grid(n)
    gf = np.exp(-(fx**2 + fy**2) / s1**2)
    out = x - np.real(np.fft.ifft2(np.fft.fft2(x) * gf))
    localstd = np.sqrt(np.abs(np.fft.ifft2(np.fft.fft2(out**2) * gf)))
    out = out / (0.2 + localstd)
    out = out[w : sn - w, w : sm - w]
    # createGabor.m on the padded size
    size = out.shape[0] + 2 * boundary
    fx, fy = _matlab_grid(size)
    fr = np.sqrt(fx**2 + fy**2)
    t = np.angle(fx + 1j * fy)
    params = []
    for i, n_or in enumerate(orientations, start=1):
        for j in range(1, n_or + 1):
            params.append(
                (0.35, 0.3 / 1.85 ** (i - 1), 16 * n_or**2 / 32**2, np.pi / n_or * (j - 1))
            )
    # gistGabor.m
    padded = np.fft.fft2(_pad_symmetric(out, boundary, boundary))
    g = []
    for p in params:
        tr = t + p[3]
        tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
        gabor = np.exp(-10 * p[0] * (fr / size / p[1] - 1) ** 2 - 2 * p[2] * np.pi * tr**2)
        ig = np.abs(np.fft.ifft2(padded * gabor))
        ig = ig[boundary : size - boundary, boundary : size - boundary]
        edges = np.fix(np.linspace(0, ig.shape[0], blocks + 1)).astype(int)
        v = np.zeros((blocks, blocks))
        for r in range(blocks):
            for c in range(blocks):
                v[r, c] = ig[edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean()
        g.extend(v.reshape(-1, order="F"))  # MATLAB's column-major reshape
    return np.asarray(g)

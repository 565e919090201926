"""Two-sample tests whose p-values are valid under "same distribution", and Holm's correction.

- Scalar per-row features: Mann-Whitney U (normal approximation with the tie correction; ranks make it robust to
  the heavy tails of question lengths). Effect: probability of superiority minus 1/2.
- Binary per-row features: Fisher's exact test. Effect: difference of proportions.
- New frequent terms: per candidate term (in at least `min_docs` questions of both samples together, a choice that
  does not look at the labels), the one-sided hypergeometric tail of its count in the current sample; the feature's
  p-value is the smallest tail times the number of candidates (Bonferroni within the feature).
- Embeddings: MMD with a Gaussian kernel (median-heuristic bandwidth on the pooled rows). Up to `exact_max_rows`
  per side, the exact biased MMD^2 with a permutation p-value; above, random-Fourier-feature MMD (linear time) whose
  p-value comes from the normal limit of its permutation distribution (exact permutation covariance, weighted
  chi-square tail by Liu-Tang-Zhang's four-moment approximation), checked against real permutations in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    effect: float
    method: str


def mann_whitney(reference: np.ndarray, current: np.ndarray) -> TestResult:
    reference, current = np.asarray(reference, float), np.asarray(current, float)
    n, m = len(reference), len(current)
    pooled = np.concatenate([reference, current])
    if n == 0 or m == 0 or np.all(pooled == pooled[0]):
        return TestResult(0.0, 1.0, 0.0, "mann-whitney")
    ranks = sps.rankdata(pooled)
    u = ranks[n:].sum() - m * (m + 1) / 2  # U of the current sample: # pairs (cur > ref) + ties / 2
    big_n = n + m
    _, counts = np.unique(pooled, return_counts=True)
    tie_term = float((counts ** 3 - counts).sum())
    variance = n * m / 12.0 * ((big_n + 1) - tie_term / (big_n * (big_n - 1)))
    if variance <= 0:
        return TestResult(0.0, 1.0, 0.0, "mann-whitney")
    z = (u - n * m / 2.0) / np.sqrt(variance)
    p = float(min(1.0, 2.0 * sps.norm.sf(abs(z))))
    return TestResult(float(z), p, float(u / (n * m) - 0.5), "mann-whitney")


def fisher(reference: np.ndarray, current: np.ndarray) -> TestResult:
    reference, current = np.asarray(reference, bool), np.asarray(current, bool)
    a, b = int(current.sum()), int(reference.sum())
    table = [[a, len(current) - a], [b, len(reference) - b]]
    if a + b == 0 or a + b == len(current) + len(reference):
        return TestResult(0.0, 1.0, 0.0, "fisher")
    odds, p = sps.fisher_exact(table)
    diff = a / max(len(current), 1) - b / max(len(reference), 1)
    return TestResult(float(diff), float(p), float(diff), "fisher")


MAX_EXACT_TAILS = 200
SEQUENTIAL_EXCEEDANCES = 10
PERMUTATION_BLOCK = 50


@dataclass(frozen=True)
class TermTest:
    result: TestResult
    columns: np.ndarray        # candidate term columns, most significant first
    term_p: np.ndarray         # their one-sided tails
    current_share: np.ndarray
    reference_share: np.ndarray


def new_terms(reference_docs: np.ndarray, current_docs: np.ndarray, n_reference: int, n_current: int,
              min_docs: int, alpha: float = 0.05) -> TermTest:
    """`*_docs`: per term column, the number of questions of each sample that contain it.

    Candidates are chosen from the pooled counts only (never from the labels), by Tarone's rule for discrete tests:
    a term whose count could not reach a tail below alpha / (number of candidates) even if every question holding it
    were current is no candidate. The feature's p-value, (number of candidates) x (smallest tail), is valid for any
    label-blind choice of candidates; Tarone's keeps the factor small (at 50 rows per side it drops from hundreds of
    terms to a few dozen)."""
    total = reference_docs + current_docs
    pooled = np.flatnonzero(total >= min_docs)
    big_n = n_reference + n_current
    empty = np.zeros(0)
    if len(pooled) == 0 or n_reference == 0 or n_current == 0:
        return TermTest(TestResult(0.0, 1.0, 0.0, "hypergeometric"), pooled, empty, empty, empty)
    k_all = total[pooled].astype(np.float64)
    # the smallest attainable upper tail: all k holders in the current sample (0 when k > n_current: never attained)
    from scipy.special import gammaln

    kk = np.minimum(k_all, n_current)  # C(n_cur, k) / C(N, k), in logs: cheap for tens of thousands of terms
    log_p = gammaln(n_current + 1) - gammaln(n_current - kk + 1) - gammaln(big_n + 1) + gammaln(big_n - kk + 1)
    attainable = np.where(k_all <= n_current, np.exp(log_p), 1.0)
    order_att = np.argsort(attainable, kind="stable")
    sorted_att = attainable[order_att]
    count = 0
    for size in range(1, len(sorted_att) + 1):  # the smallest K with #{attainable <= alpha / K} <= K
        if np.searchsorted(sorted_att, alpha / size, side="right") <= size:
            count = int(np.searchsorted(sorted_att, alpha / size, side="right"))
            break
    candidates = np.sort(pooled[order_att[:count]]) if count else pooled[:0]
    if len(candidates) == 0:
        return TermTest(TestResult(0.0, 1.0, 0.0, "hypergeometric (no attainable term)"), candidates, empty, empty,
                        empty)
    a = current_docs[candidates].astype(np.float64)
    k = total[candidates].astype(np.float64)
    expected = k * n_current / big_n
    spread = np.sqrt(np.maximum(expected * (1 - n_current / big_n) * (big_n - k) / max(big_n - 1, 1), 1e-12))
    z = (a - expected) / spread
    tails = np.ones(len(candidates))
    extreme = np.flatnonzero(z > 0)
    if len(extreme) > MAX_EXACT_TAILS:  # only the most over-represented can hold the minimum that matters
        extreme = extreme[np.argsort(-z[extreme], kind="stable")[:MAX_EXACT_TAILS]]
    tails[extreme] = sps.hypergeom.sf(a[extreme] - 1, big_n, k[extreme], n_current)
    order = np.argsort(tails, kind="stable")
    p = float(min(1.0, tails[order[0]] * len(candidates)))
    cur_share = a / n_current
    ref_share = reference_docs[candidates] / n_reference
    effect = float(cur_share[order[0]] - ref_share[order[0]])
    statistic = float(-np.log10(max(tails[order[0]], 1e-300)))
    return TermTest(TestResult(statistic, p, effect, f"hypergeometric, {len(candidates)} candidate terms"),
                    candidates[order], tails[order], cur_share[order], ref_share[order])


def _bandwidth(pooled: np.ndarray, rng: np.random.Generator, sample: int = 500) -> float:
    """Median pairwise squared distance on a label-blind subsample of the pooled rows."""
    rows = pooled if len(pooled) <= sample else pooled[rng.choice(len(pooled), sample, replace=False)]
    sq = (rows ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0)
    upper = d2[np.triu_indices(len(rows), 1)]
    median = float(np.median(upper)) if len(upper) else 1.0
    return median if median > 0 else 1.0


@dataclass(frozen=True)
class MMDTest:
    result: TestResult
    witness: np.ndarray        # per current row: how much more it resembles the current sample than the reference


def mmd(reference: np.ndarray, current: np.ndarray, rng: np.random.Generator, permutations: int = 500,
        exact_max_rows: int = 1000, rff_features: int = 128) -> MMDTest:
    """One BLAS thread: these products are mid-sized, and OpenBLAS's threads on a busy 2-core machine made them
    10-20x slower (measured: a 10k x 128 covariance took 80 ms with 2 threads, 5 ms with one)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _mmd(reference, current, rng, permutations, exact_max_rows, rff_features)


def _mmd(reference: np.ndarray, current: np.ndarray, rng: np.random.Generator, permutations: int,
         exact_max_rows: int, rff_features: int) -> MMDTest:
    reference = np.asarray(reference, np.float64)
    current = np.asarray(current, np.float64)
    n, m = len(reference), len(current)
    pooled = np.vstack([reference, current])
    if n < 2 or m < 2:
        return MMDTest(TestResult(0.0, 1.0, 0.0, "mmd"), np.zeros(m))
    gamma = 1.0 / _bandwidth(pooled, rng)
    if max(n, m) <= exact_max_rows:
        return _exact_mmd(pooled, n, m, gamma, rng, permutations)
    return _rff_mmd(pooled, n, m, gamma, rng, rff_features)


def _exact_mmd(pooled: np.ndarray, n: int, m: int, gamma: float, rng: np.random.Generator,
               permutations: int) -> MMDTest:
    sq = (pooled ** 2).sum(1)
    kernel = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0)).astype(np.float32)
    weights = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)]).astype(np.float32)
    observed = float(weights @ kernel @ weights)
    p, used = _sequential_permutation_p(kernel, weights, observed, rng, permutations)
    witness = kernel[n:, n:].mean(1) - kernel[n:, :n].mean(1)
    return MMDTest(TestResult(observed, float(p), observed, f"exact MMD, {used} permutations"),
                   witness.astype(np.float64))


def _sequential_permutation_p(kernel: np.ndarray, weights: np.ndarray, observed: float, rng: np.random.Generator,
                              permutations: int, exceedances: int = SEQUENTIAL_EXCEEDANCES) -> tuple[float, int]:
    """Besag & Clifford's sequential permutation p-value: stop at the `exceedances`-th permuted statistic >= the
    observed one (p = h / L after L permutations), else p = (1 + exceedances) / (1 + permutations). Exactly valid,
    and an unremarkable statistic (the usual case) costs a few dozen permutations instead of all of them."""
    exceed, done = 0, 0
    while done < permutations:
        block = min(PERMUTATION_BLOCK, permutations - done)
        perm = np.ascontiguousarray(rng.permuted(np.tile(weights, (block, 1)), axis=1))  # block x N
        values = np.einsum("ij,ij->i", perm, perm @ kernel)
        hits = np.cumsum(values >= observed - 1e-6 * abs(observed))  # float32 sums: a relative tolerance
        if exceed + hits[-1] >= exceedances:
            stop = int(np.argmax(exceed + hits >= exceedances)) + 1
            return exceedances / (done + stop), done + stop
        exceed += int(hits[-1])
        done += block
    return (1 + exceed) / (1 + permutations), permutations


def _rff_mmd(pooled: np.ndarray, n: int, m: int, gamma: float, rng: np.random.Generator, features: int) -> MMDTest:
    dims = pooled.shape[1]
    omega = rng.normal(scale=np.sqrt(2 * gamma), size=(dims, features)).astype(np.float32)  # E cos(w.(x-y)) = k
    phase = rng.uniform(0, 2 * np.pi, size=features).astype(np.float32)
    phi = np.float32(np.sqrt(2.0 / features)) * np.cos(pooled.astype(np.float32) @ omega + phase)
    diff = (phi[n:].mean(0, dtype=np.float64) - phi[:n].mean(0, dtype=np.float64))
    observed = float(diff @ diff)
    big_n = n + m
    centred = phi - phi.mean(0)
    covariance = (1.0 / n + 1.0 / m) * (centred.T @ centred).astype(np.float64) / (big_n - 1)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0, None)
    p = weighted_chi2_sf(observed, eigenvalues)
    witness = phi[n:].astype(np.float64) @ diff
    return MMDTest(TestResult(observed, p, observed, f"random-Fourier-feature MMD ({features} features)"), witness)


def weighted_chi2_sf(x: float, weights: np.ndarray) -> float:
    """P(sum_j w_j chi2_1 > x) by Liu, Tang & Zhang (2009): a noncentral chi-square matching four cumulants."""
    weights = weights[weights > 0]
    if len(weights) == 0:
        return 1.0
    c1, c2, c3, c4 = (float((weights ** k).sum()) for k in (1, 2, 3, 4))
    s1, s2 = c3 / c2 ** 1.5, c4 / c2 ** 2
    if s1 ** 2 > s2:
        a = 1.0 / (s1 - np.sqrt(s1 ** 2 - s2))
        delta = s1 * a ** 3 - a ** 2
        dof = a ** 2 - 2 * delta
    else:
        a = 1.0 / s1
        delta = 0.0
        dof = 1.0 / s1 ** 2
    t = (x - c1) / np.sqrt(2 * c2)
    mu_x, sigma_x = dof + delta, np.sqrt(2.0) * a
    q = t * sigma_x + mu_x
    if delta > 0:
        return float(np.clip(sps.ncx2.sf(q, dof, delta), 0.0, 1.0))
    return float(np.clip(sps.chi2.sf(q, dof), 0.0, 1.0))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given)."""
    k = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(k)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()

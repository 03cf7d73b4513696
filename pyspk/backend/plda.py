"""Kaldi's two-covariance PLDA (ivector/plda.{h,cc}), vectorised.

Model: ``mean``, ``transform`` (makes the within-class covariance unit and the
between-class covariance diagonal) and ``psi`` (that diagonal, decreasing).

* :func:`estimate_plda` is ``ivector-compute-plda``: E-M from speaker-labelled
  embeddings, starting from unit covariances, then Cholesky + eigen
  simultaneous diagonalisation.
* :meth:`Plda.transform_vectors` is ``Plda::TransformIvector`` (with the
  number of averaged utterances and Kaldi's two length normalisations).
* :meth:`Plda.log_likelihood_ratio` and :class:`PldaScorer` give
  ``Plda::LogLikelihoodRatio`` (with the number of enrolment utterances).
* :func:`adapt_plda` is ``ivector-adapt-plda`` (``PldaUnsupervisedAdaptor``):
  unsupervised adaptation of the mean and covariances to unlabelled in-domain
  embeddings.
* :meth:`Plda.write` / :meth:`Plda.read` use Kaldi's Plda object format
  (text as ``copy-plda --binary=false`` writes it, or binary), so models move
  both ways between Kaldi and pyspk.
"""

import logging
import os
import re
import struct
from collections.abc import Callable
from typing import Self

import numpy as np
from numpy.typing import ArrayLike

from pyspk.backend.scoring import EnrollSide, TestSide
from pyspk.backend.transforms import group_sums
from pyspk.data.datadir import DataDirError
from pyspk.fileutil import PathLike, atomic_open

logger = logging.getLogger(__name__)

LOG_2PI = np.log(2 * np.pi)


class Plda:
    def __init__(self, mean: ArrayLike, transform: ArrayLike, psi: ArrayLike):
        self.mean = np.asarray(mean, dtype=np.float64).ravel()
        self.transform = np.asarray(transform, dtype=np.float64)
        self.psi = np.asarray(psi, dtype=np.float64).ravel()
        dim = self.mean.size
        if dim == 0 or self.transform.shape != (dim, dim) or self.psi.size != dim:
            raise ValueError(f"inconsistent PLDA: mean {self.mean.shape}, transform {self.transform.shape}, "
                             f"psi {self.psi.shape}")
        if np.any(self.psi < 0) or not all(np.all(np.isfinite(a)) for a in (self.mean, self.transform, self.psi)):
            raise ValueError("PLDA has negative between-class variances or non-finite values")
        self.offset = -self.transform @ self.mean

    @property
    def dim(self) -> int:
        return self.mean.size

    def transform_vectors(self, x: ArrayLike, num_examples: ArrayLike = 1, normalize_length: bool = True,
                          simple_length_norm: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Kaldi ``TransformIvector`` for each row: ``(transformed, normalisation factors)``.

        ``num_examples``: utterances averaged into each row (scalar or per row);
        the default length normalisation makes ``y^T (psi + I/n)^-1 y = dim``,
        the simple one makes ``|y| = sqrt(dim)``; factors are returned even
        when not applied.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"PLDA has dimension {self.dim}, vectors have shape {x.shape}")
        y = x @ self.transform.T + self.offset
        if simple_length_norm:
            factors = np.sqrt(self.dim) / np.linalg.norm(y, axis=1)
        else:
            n = np.broadcast_to(np.asarray(num_examples, dtype=np.float64), (y.shape[0],))
            if np.any(n < 1):
                raise ValueError("numbers of examples must be positive")
            inv_covar = 1.0 / (self.psi[None, :] + 1.0 / n[:, None])
            factors = np.sqrt(self.dim / np.einsum("ij,ij->i", y * y, inv_covar))
        if normalize_length:
            y = y * factors[:, None]
        return y, factors

    def log_likelihood_ratio(self, enroll: np.ndarray, num_enroll: ArrayLike, test: np.ndarray) -> np.ndarray:
        """Kaldi ``LogLikelihoodRatio`` of transformed row pairs ``(enroll[k], test[k])``.

        ``enroll`` rows are averages of ``num_enroll`` utterances (scalar or per row).
        """
        enroll = np.atleast_2d(np.asarray(enroll, dtype=np.float64))
        test = np.atleast_2d(np.asarray(test, dtype=np.float64))
        n = np.broadcast_to(np.asarray(num_enroll, dtype=np.float64), (enroll.shape[0],))[:, None]
        psi = self.psi[None, :]
        mean = n * psi / (n * psi + 1.0) * enroll
        variance = 1.0 + psi / (n * psi + 1.0)
        given_class = -0.5 * (np.log(variance).sum(axis=1) + LOG_2PI * self.dim
                              + ((test - mean) ** 2 / variance).sum(axis=1))
        without_class = -0.5 * (np.log(1.0 + self.psi).sum() + LOG_2PI * self.dim
                                + (test ** 2 / (1.0 + psi)).sum(axis=1))
        return given_class - without_class

    def smooth_within_class_covariance(self, factor: float) -> "Plda":
        """Kaldi ``SmoothWithinClassCovariance`` (``ivector-copy-plda --smoothing``): adds
        ``factor`` times the between-class covariance to the within-class one."""
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"smoothing factor must be in [0, 1], got {factor}")
        within = 1.0 + factor * self.psi
        return Plda(self.mean, self.transform / np.sqrt(within)[:, None], self.psi / within)

    def covariances(self) -> tuple[np.ndarray, np.ndarray]:
        """``(within, between)`` covariances in the input space."""
        inverse = np.linalg.inv(self.transform)
        return inverse @ inverse.T, (inverse * self.psi) @ inverse.T

    # Kaldi's Plda object format: <Plda> mean-vector transform-matrix psi-vector </Plda>

    def to_kaldi_text(self) -> str:
        """The model in Kaldi's text format."""
        def vector(v):
            return " [ " + "".join(f"{x!r} " for x in v.tolist()) + "]\n"
        rows = "".join("\n  " + "".join(f"{x!r} " for x in row) for row in self.transform.tolist())
        return "<Plda> " + vector(self.mean) + " [" + rows + "]\n" + vector(self.psi) + "</Plda> \n"

    def to_kaldi_binary(self) -> bytes:
        """The model in Kaldi's binary format."""
        def header(token, *sizes):
            return token + b" " + b"".join(b"\x04" + struct.pack("<i", s) for s in sizes)
        return (b"\0B<Plda> " + header(b"DV", self.dim) + self.mean.astype("<f8").tobytes()
                + header(b"DM", self.dim, self.dim) + self.transform.astype("<f8").tobytes()
                + header(b"DV", self.dim) + self.psi.astype("<f8").tobytes() + b"</Plda> ")

    def write(self, path: PathLike, binary: bool = False) -> None:
        """Write in Kaldi's format (text by default; Kaldi tools read either)."""
        if binary:
            with atomic_open(path, "wb") as f:
                f.write(self.to_kaldi_binary())
        else:
            with atomic_open(path, "w", encoding="ascii") as f:
                f.write(self.to_kaldi_text())

    @classmethod
    def read(cls, path: PathLike) -> Self:
        """Read a Kaldi Plda file, text or binary (as written by ``ivector-compute-plda``)."""
        if not os.path.isfile(path):
            raise DataDirError(path, 0, "no such file")
        with open(path, "rb") as f:
            data = f.read()
        try:
            if data.startswith(b"\0B"):
                mean, transform, psi = _parse_kaldi_binary(data)
            else:
                mean, transform, psi = _parse_kaldi_text(data.decode("ascii"))
            return cls(mean, transform, psi)
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            raise DataDirError(path, 0, f"not a Kaldi PLDA model: {e}") from None


_TEXT_PLDA = re.compile(r"\s*<Plda>\s*\[([^\]]*)\]\s*\[([^\]]*)\]\s*\[([^\]]*)\]\s*</Plda>\s*$")


def _parse_numbers(text):
    return [float(token) for token in text.split()]


def _parse_kaldi_text(text):
    match = _TEXT_PLDA.match(text)
    if not match:
        raise ValueError("expected '<Plda> [ mean ] [ transform rows ] [ psi ] </Plda>'")
    mean = _parse_numbers(match.group(1))
    rows = [_parse_numbers(line) for line in re.split(r"[\n;]", match.group(2)) if line.strip()]
    if any(len(row) != len(rows[0]) for row in rows):
        raise ValueError("transform rows have different lengths")
    return np.array(mean), np.array(rows), np.array(_parse_numbers(match.group(3)))


def _parse_kaldi_binary(data):
    pos = 2

    def expect(token):
        nonlocal pos
        if data[pos:pos + len(token)] != token:
            raise ValueError(f"expected {token!r} at byte {pos}")
        pos += len(token)

    def read_int():
        nonlocal pos
        expect(b"\x04")
        value = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        return value

    def read_array(kind):
        nonlocal pos
        precision = data[pos:pos + 1]
        if precision not in (b"D", b"F"):
            raise ValueError(f"expected a double or float {kind} at byte {pos}")
        expect(precision + kind + b" ")
        shape = (read_int(),) if kind == b"V" else (read_int(), read_int())
        dtype = np.dtype("<f8" if precision == b"D" else "<f4")
        count = int(np.prod(shape))
        if pos + count * dtype.itemsize > len(data):
            raise ValueError("truncated file")
        array = np.frombuffer(data, dtype, count, pos).reshape(shape)
        pos += count * dtype.itemsize
        return array

    expect(b"<Plda> ")
    mean, transform, psi = read_array(b"V"), read_array(b"M"), read_array(b"V")
    expect(b"</Plda>")
    return mean, transform, psi


class _PldaStats:
    """Sufficient statistics of ``ivector-compute-plda`` (all class weights 1)."""

    def __init__(self, x, labels):
        x = np.asarray(x, dtype=np.float64)
        _, class_index, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
        self.num_examples, self.dim = x.shape
        self.num_classes = counts.size
        shift = x.mean(axis=0)  # the scatter below is shift-invariant; centring keeps it accurate
        x = x - shift
        sums = group_sums(x, class_index.ravel(), counts)
        class_means = sums / counts[:, None]
        # Sum over examples of (x - class mean)(x - class mean)^T.
        self.offset_scatter = _symmetric(x.T @ x - sums.T @ class_means)
        centred = class_means - class_means.mean(axis=0)
        self.mean = class_means.mean(axis=0) + shift  # Kaldi: the mean of the class means
        # Classes grouped by size: E-M needs one matrix inverse per distinct size.
        self.sizes, size_index = np.unique(counts, return_inverse=True)
        self.centred_means = [centred[size_index.ravel() == g] for g in range(self.sizes.size)]


def _inverse_and_logdet(spd, what):
    try:
        chol = np.linalg.cholesky(spd)
    except np.linalg.LinAlgError:
        raise ValueError(f"{what} covariance is singular: use more utterances per speaker "
                         "or a lower dimension (--lda-dim)") from None
    chol_inv = np.linalg.inv(chol)
    return chol_inv.T @ chol_inv, 2.0 * np.log(np.diag(chol)).sum()


class _PldaEstimator:
    def __init__(self, stats):
        self.stats = stats
        self.within = np.eye(stats.dim)
        self.between = np.eye(stats.dim)

    def em_iteration(self):
        s = self.stats
        within_stats = s.offset_scatter.copy()
        within_count = float(s.num_examples - s.num_classes)
        between_stats = np.zeros((s.dim, s.dim))
        between_inv, _ = _inverse_and_logdet(self.between, "between-class")
        within_inv, _ = _inverse_and_logdet(self.within, "within-class")
        for n, means in zip(s.sizes.tolist(), s.centred_means, strict=True):
            # Posterior of the speaker variable x given a class mean m of n examples:
            # covariance (B^-1 + n W^-1)^-1, mean w = that * n W^-1 m.
            mixed, _ = _inverse_and_logdet(between_inv + n * within_inv, "mixed")
            w = means @ (n * within_inv) @ mixed
            m_w = means - w
            k = means.shape[0]
            between_stats += k * mixed + w.T @ w
            within_stats += n * k * mixed + n * (m_w.T @ m_w)
            within_count += k
        self.within = _symmetric(within_stats / within_count)
        self.between = _symmetric(between_stats / s.num_classes)

    def objective(self):
        """Log-likelihood per example (Kaldi ``PldaEstimator::ComputeObjf``)."""
        s = self.stats
        within_inv, within_logdet = _inverse_and_logdet(self.within, "within-class")
        part1 = -0.5 * ((s.num_examples - s.num_classes) * (within_logdet + LOG_2PI * s.dim)
                        + np.sum(within_inv * s.offset_scatter))
        part2 = 0.0
        for n, means in zip(s.sizes.tolist(), s.centred_means, strict=True):
            combined_inv, combined_logdet = _inverse_and_logdet(self.between + self.within / n, "combined")
            quad = np.einsum("ij,jk,ik->", means, combined_inv, means)
            part2 += -0.5 * (means.shape[0] * (combined_logdet + LOG_2PI * s.dim) + quad)
        return (part1 + part2) / s.num_examples

    def output(self):
        transform, psi = _simultaneous_diagonalisation(self.within, self.between)
        return Plda(self.stats.mean, transform, psi)


def _symmetric(matrix):
    return (matrix + matrix.T) / 2


def estimate_plda(x: ArrayLike, labels: ArrayLike, num_em_iters: int = 10,
                  objectives: list[float] | None = None) -> Plda:
    """Train a PLDA model (Kaldi ``ivector-compute-plda``) from rows of ``x`` and speaker ``labels``.

    If ``objectives`` is a list, the per-example log-likelihood after each
    iteration is appended to it.
    """
    stats = _PldaStats(x, labels)
    if stats.num_examples == stats.num_classes:
        raise ValueError("no speaker has more than one utterance, unable to estimate PLDA")
    logger.info("PLDA: %d speakers, %d utterances, dimension %d, %d E-M iterations",
                stats.num_classes, stats.num_examples, stats.dim, num_em_iters)
    estimator = _PldaEstimator(stats)
    for iteration in range(num_em_iters):
        estimator.em_iteration()
        if objectives is not None or logger.isEnabledFor(logging.INFO):
            objective = estimator.objective()
            logger.info("iteration %d: objective per example %.6f, trace within %.4g, between %.4g",
                        iteration, objective, np.trace(estimator.within), np.trace(estimator.between))
            if objectives is not None:
                objectives.append(objective)
    plda = estimator.output()
    logger.info("between-class variances in the normalised space: %s",
                np.array2string(plda.psi[:10], precision=3) + (" ..." if plda.dim > 10 else ""))
    return plda


def adapt_plda(plda: Plda, vectors: ArrayLike, within_covar_scale: float = 0.75, between_covar_scale: float = 0.25,
               mean_diff_scale: float = 1.0) -> Plda:
    """Unsupervised in-domain adaptation of ``plda``, as Kaldi's ``ivector-adapt-plda``.

    A PLDA trained out of domain under-estimates the variability of in-domain
    data. From unlabelled rows of ``vectors`` (in the PLDA's input space, i.e.
    after the same mean subtraction, LDA and length norm) this takes their
    mean as the new mean, and their covariance (plus ``mean_diff_scale``
    times the outer product of the mean shift) in the space where the model's
    total covariance ``within + between`` is unit. In every eigen-direction
    of that covariance whose variance ``s`` exceeds 1, the excess ``s - 1``
    is added to the within-class covariance times ``within_covar_scale`` and
    to the between-class one times ``between_covar_scale``; directions with
    less variance than the model expects are left as they are. The model is
    then re-diagonalised (Cholesky of the within-class covariance, eigen of
    the between-class one) into a new transform and psi. Kaldi's library
    defaults are 0.3 / 0.7; these defaults are those of its recipes
    (egs/sre16/v2: ``--within-covar-scale=0.75 --between-covar-scale=0.25``).
    Returns a new model; ``plda`` is unchanged.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != plda.dim:
        raise ValueError(f"PLDA has dimension {plda.dim}, adaptation vectors have shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"PLDA adaptation needs at least 2 vectors, got {x.shape[0]}")
    for name, value in (("within_covar_scale", within_covar_scale), ("between_covar_scale", between_covar_scale),
                        ("mean_diff_scale", mean_diff_scale)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a non-negative number, got {value}")
    if not np.all(np.isfinite(x)):
        raise ValueError("adaptation vectors have non-finite values")

    # Statistics of the adaptation data: mean and (biased) centred covariance,
    # plus the optional term for the shift of the mean.
    mean = x.mean(axis=0)
    centred = x - mean
    variance = centred.T @ centred / x.shape[0]
    mean_diff = mean - plda.mean
    variance += mean_diff_scale * np.outer(mean_diff, mean_diff)

    # The PLDA transform makes the within-class covariance I and the between-class
    # one diag(psi); scaling its rows by 1/sqrt(1 + psi) makes the total unit.
    total_scale = 1.0 / np.sqrt(1.0 + plda.psi)
    to_unit_total = plda.transform * total_scale[:, None]
    projected = _symmetric(to_unit_total @ variance @ to_unit_total.T)
    eigvals, eigvecs = np.linalg.eigh(projected)
    excess = np.maximum(eigvals - 1.0, 0.0)
    logger.info("PLDA adaptation: %d vectors, |mean difference| %.4g; %d of %d directions have more variance "
                "than the model (largest ratio %.4g)", x.shape[0], np.linalg.norm(mean_diff),
                int((excess > 0).sum()), plda.dim, eigvals.max())
    # In that space within = diag(1/(1+psi)) and between = diag(psi/(1+psi)); each
    # gets its share of the excess variance, eigvecs diag(excess) eigvecs^T.
    excess_covar = (eigvecs * excess) @ eigvecs.T
    within_unit = np.diag(total_scale ** 2) + within_covar_scale * excess_covar
    between_unit = np.diag(plda.psi * total_scale ** 2) + between_covar_scale * excess_covar
    # Back to the input space, then diagonalise again as ivector-compute-plda does.
    back = np.linalg.inv(to_unit_total)
    within = _symmetric(back @ within_unit @ back.T)
    between = _symmetric(back @ between_unit @ back.T)
    transform, psi = _simultaneous_diagonalisation(within, between)
    logger.info("between-class variances in the normalised space: before %s, after %s",
                np.array2string(plda.psi[:10], precision=3), np.array2string(psi[:10], precision=3))
    return Plda(mean, transform, psi)


def _simultaneous_diagonalisation(within, between):
    """``(transform, psi)``: transform @ within @ transform.T = I, transform @ between @ transform.T
    = diag(psi), psi decreasing (Cholesky of ``within``, then eigen; Kaldi's order)."""
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        raise ValueError("within-class covariance is singular") from None
    normalizing = np.linalg.inv(chol)
    psi, eigvecs = np.linalg.eigh(_symmetric(normalizing @ between @ normalizing.T))
    num_floored = int((psi < 0).sum())
    if num_floored:  # between is positive semi-definite: only rounding gives negative values
        logger.warning("floored %d eigenvalues of between-class variance to zero", num_floored)
    order = np.argsort(psi)[::-1]
    return eigvecs[:, order].T @ normalizing, np.maximum(psi[order], 0.0)


class PldaScorer:
    """Scores as Kaldi ``ivector-plda-scoring``: test vectors transformed with one
    example, enrolment vectors with their number of utterances.

    ``preprocess`` (e.g. mean subtraction, LDA, length norm) is applied to raw
    embeddings before the PLDA transform.
    """

    def __init__(self, plda: Plda, preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
                 normalize_length: bool = True, simple_length_norm: bool = False):
        self.plda = plda
        self.preprocess = preprocess
        self.normalize_length = normalize_length
        self.simple_length_norm = simple_length_norm

    def _transform(self, x, counts):
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.plda.transform_vectors(x, counts, self.normalize_length, self.simple_length_norm)[0]

    def _group_terms(self, n):
        """Per number of enrolment utterances: mean scale ``n psi / (n psi + 1)`` and variance."""
        n = np.asarray(n, dtype=np.float64)[:, None]
        psi = self.plda.psi[None, :]
        return n * psi / (n * psi + 1.0), 1.0 + psi / (n * psi + 1.0)

    def enroll_side(self, x: np.ndarray, counts: ArrayLike) -> EnrollSide:
        """Enrolment vectors ``x`` (raw embeddings), each the mean of ``counts`` utterances (scalar or per row)."""
        counts = np.broadcast_to(np.asarray(counts, dtype=np.int64), (len(x),))
        t = self._transform(x, counts)
        group_values, group = np.unique(counts, return_inverse=True)
        scale, variance = self._group_terms(group_values)
        mean = scale[group] * t
        feats = mean / variance[group]
        logdet_ratio = np.log(variance).sum(axis=1) - np.log(1.0 + self.plda.psi).sum()
        bias = -0.5 * np.einsum("ij,ij->i", mean, feats) - 0.5 * logdet_ratio[group]
        # float32 features halve the memory traffic of trial scoring; the rounding
        # (~1e-7 relative) is that of Kaldi, which keeps transformed vectors as float.
        return EnrollSide(feats.astype(np.float32), bias, group.ravel(), group_values)

    def test_side(self, x: ArrayLike, group_values: ArrayLike) -> TestSide:
        """Test vectors ``x`` (raw embeddings) against enrolments of ``group_values`` utterances."""
        t = self._transform(x, 1)
        _, variance = self._group_terms(group_values)
        weights = 1.0 / variance - 1.0 / (1.0 + self.plda.psi)[None, :]
        return TestSide(t.astype(np.float32), -0.5 * (t * t) @ weights.T)

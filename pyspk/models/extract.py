"""Utterance embeddings from features, in chunks, as Kaldi's nnet3-xvector-compute.

An utterance longer than ``chunk_size`` frames is cut into full chunks of
``chunk_size`` frames. A remainder of at least ``min_chunk_size`` frames is
covered by one more full-size chunk ending at the last frame (so every chunk
sees a full context and chunks of all long utterances batch together) and
counts in the average with the weight of its new frames only; a shorter
remainder is dropped, as Kaldi drops it. Chunk embeddings are averaged with
these frame weights. An utterance shorter than ``min_chunk_size`` is padded by
repeating it. Chunks of equal length, from any utterances, are batched.

Also here: reading a job's features (with optional VAD) with per-utterance
failure accounting, and writing Kaldi vector arks with their scp.
"""

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import kaldiio
import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from pyspk.data.arkio import load_matrix
from pyspk.fileutil import PathLike, atomic_open, atomic_path

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def chunk_plan(num_frames: int, chunk_size: int, min_chunk_size: int) -> list[tuple[int, int, float]]:
    """``[(start, length, weight)]`` of the chunks that embed an utterance of ``num_frames``."""
    if min_chunk_size > chunk_size:
        raise ValueError(f"min_chunk_size ({min_chunk_size}) must not exceed chunk_size ({chunk_size})")
    if num_frames <= chunk_size:
        return [(0, num_frames, 1.0)]
    num_full, rest = divmod(num_frames, chunk_size)
    plan = [(i * chunk_size, chunk_size, 1.0) for i in range(num_full)]
    if rest >= min_chunk_size:
        plan.append((num_frames - chunk_size, chunk_size, rest / chunk_size))
    return plan


def pad_by_repetition(feats: np.ndarray, num_frames: int) -> np.ndarray:
    """Repeat ``feats`` (frames, dim) cyclically to ``num_frames`` frames."""
    return feats[np.arange(num_frames) % len(feats)]


def split_into_chunks(feats: np.ndarray, chunk_size: int,
                      min_chunk_size: int) -> tuple[list[np.ndarray], list[float]]:
    """Chunks (views of ``feats``) and their averaging weights."""
    if len(feats) < min_chunk_size:
        return [pad_by_repetition(feats, min_chunk_size)], [1.0]
    plan = chunk_plan(len(feats), chunk_size, min_chunk_size)
    return [feats[start:start + length] for start, length, _ in plan], [weight for _, _, weight in plan]


@torch.inference_mode()
def _embed_pending(model, pending, batch_size, device):
    """Embed the chunks of ``pending`` [(utt, chunks, weights)]; yield (utt, embedding)."""
    by_length = {}
    for i, (_, chunks, _) in enumerate(pending):
        for j, chunk in enumerate(chunks):
            by_length.setdefault(len(chunk), []).append((i, j))
    chunk_embeddings = [[None] * len(chunks) for _, chunks, _ in pending]
    for refs in by_length.values():
        for start in range(0, len(refs), batch_size):
            part = refs[start:start + batch_size]
            batch = torch.from_numpy(np.stack([pending[i][1][j] for i, j in part])).to(device)
            output = model(batch).float().cpu().numpy()
            for (i, j), embedding in zip(part, output, strict=True):
                chunk_embeddings[i][j] = embedding
    for (utt, _, chunk_weights), embeddings in zip(pending, chunk_embeddings, strict=True):
        weights = np.asarray(chunk_weights, dtype=np.float64)
        mean = weights @ np.stack(embeddings).astype(np.float64) / weights.sum()
        yield utt, mean.astype(np.float32)


def extract_embeddings(model: nn.Module, feats_iter: Iterable[tuple[str, ArrayLike]], chunk_size: int = 1000,
                       min_chunk_size: int = 100, batch_size: int = 32, device: torch.device | str | None = None,
                       buffer_chunks: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(utt, float32 embedding)`` for each ``(utt, (frames, feat_dim) array)``, in input order.

    ``model`` is put in eval mode (and on ``device`` when given). Up to
    ``buffer_chunks`` chunks (default 4 x batch_size) are gathered before
    running, so equal-length chunks of different utterances share batches.
    """
    if chunk_size < 1 or min_chunk_size < 1 or batch_size < 1:
        raise ValueError("chunk_size, min_chunk_size and batch_size must be positive")
    if min_chunk_size > chunk_size:
        raise ValueError(f"min_chunk_size ({min_chunk_size}) must not exceed chunk_size ({chunk_size})")
    if device is None:
        device = next(model.parameters()).device
    model.to(device).eval()
    buffer_chunks = buffer_chunks or 4 * batch_size
    pending, num_chunks = [], 0
    for utt, feats in feats_iter:
        chunks, weights = split_into_chunks(np.asarray(feats, dtype=np.float32), chunk_size, min_chunk_size)
        pending.append((utt, chunks, weights))
        num_chunks += len(chunks)
        if num_chunks >= buffer_chunks:
            yield from _embed_pending(model, pending, batch_size, device)
            pending, num_chunks = [], 0
    if pending:
        yield from _embed_pending(model, pending, batch_size, device)


def job_share(items: Sequence[_T], job: int, num_jobs: int) -> Sequence[_T]:
    """The contiguous block of ``items`` for ``job`` (1-based) of ``num_jobs``, as Kaldi's split_scp."""
    if not 1 <= job <= num_jobs:
        raise ValueError(f"job {job} is not in 1..{num_jobs}")
    return items[(job - 1) * len(items) // num_jobs: job * len(items) // num_jobs]


def _check_features(feats, feat_dim):
    if feats.ndim != 2:
        raise ValueError(f"expected a feature matrix, got an array of shape {feats.shape}")
    if feat_dim is not None and feats.shape[1] != feat_dim:
        raise ValueError(f"feature dim {feats.shape[1]} but the model expects {feat_dim}")
    if len(feats) == 0:
        raise ValueError("no frames")
    if not np.isfinite(feats).all():
        raise ValueError("features contain NaN or Inf")


def select_voiced(feats: np.ndarray, vad: ArrayLike) -> np.ndarray:
    """The frames of ``feats`` whose VAD decision is 1 (ValueError when none or the lengths differ)."""
    vad = np.asarray(vad).reshape(-1)
    if len(vad) != len(feats):
        raise ValueError(f"vad has {len(vad)} frames but features have {len(feats)}")
    voiced = feats[vad > 0.5]
    if len(voiced) == 0:
        raise ValueError("no voiced frames")
    return voiced


def iter_features(feats_scp: Mapping[str, str], utts: Iterable[str], feat_dim: int | None = None,
                  vad_scp: Mapping[str, str] | None = None,
                  failed: list[tuple[str, str]] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(utt, float32 features)`` for ``utts`` (keys of the scp dicts); log and skip bad ones.

    ``feats_scp``/``vad_scp`` map utt -> Kaldi rxspecifier (``file.ark:offset``).
    Unreadable or inconsistent utterances are logged with their id and
    appended to ``failed`` as ``(utt, reason)``.
    """
    failed = [] if failed is None else failed
    open_files = {}
    try:
        for utt in utts:
            try:
                if utt not in feats_scp:
                    raise ValueError("not in feats.scp")
                feats = np.asarray(load_matrix(feats_scp[utt], fd_dict=open_files), dtype=np.float32)
                _check_features(feats, feat_dim)
                if vad_scp is not None:
                    if utt not in vad_scp:
                        raise ValueError("not in vad.scp")
                    feats = select_voiced(feats, load_matrix(vad_scp[utt], fd_dict=open_files))
            except Exception as e:  # any reading problem fails this utterance only
                reason = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
                log.warning("%s: failed: %s", utt, reason)
                failed.append((utt, reason))
                continue
            yield utt, feats
    finally:
        for f in open_files.values():
            f.close()


def write_vectors(ark_path: PathLike, scp_path: PathLike, items: Iterable[tuple[str, ArrayLike]]) -> int:
    """Write ``(key, vector)`` items to a binary Kaldi ark and its scp; return the count.

    The scp names the ark by its absolute final path. The ark is renamed into
    place first and the scp last, so an existing scp always points to a whole ark.
    """
    ark_abs = os.path.abspath(ark_path)
    lines = []
    with atomic_open(scp_path, "w", encoding="utf-8") as scp:
        with atomic_path(ark_path) as tmp_ark, open(tmp_ark, "wb") as ark:
            for key, vector in items:
                ark.write(f"{key} ".encode())
                lines.append(f"{key} {ark_abs}:{ark.tell()}\n")
                kaldiio.matio.write_array(ark, np.asarray(vector, dtype=np.float32))
        try:
            scp.writelines(lines)
            scp.flush()
        except BaseException:  # e.g. a full disk: no ark may stay without its scp
            os.remove(ark_path)
            raise
    return len(lines)

"""Synthetic fbank data dirs for tests, benchmarks and smoke runs (no audio needed).

Each frame is one of a set of "phone" templates that every speaker realises
in their own way (templates shifted along the mel axis, as a vocal-tract
length would, and scaled per bin), plus a spectral envelope, a per-utterance
channel offset and noise. The envelope and the channel are per-bin constants
that per-crop mean normalisation removes; the speaker's phone realisation
survives it, so speakers are separable but not trivially.
"""

import os
from collections.abc import Iterable

import kaldiio
import numpy as np

from pyspk.data.datadir import utt2spk_to_spk2utt, write_table


def make_feats_data_dir(path: str, n_spk: int = 4, n_utt: int = 3, min_frames: int = 150, max_frames: int = 300,
                        feat_dim: int = 80, seed: int = 0, copies: Iterable[str] = ()) -> str:
    """Write ``feats.ark/scp``, ``utt2spk``, ``spk2utt``, ``utt2num_frames`` under ``path``.

    ``copies``: suffixes (e.g. ``("reverb", "noise")``) of augmented copies
    ``<utt>-<suffix>`` to add, same length as their clean utterance.
    Returns ``path``.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    bins = np.linspace(0.0, 1.0, feat_dim)
    phones = rng.normal(0.0, 1.5, size=(12, feat_dim))
    utt2spk, utt2num_frames = {}, {}
    ark, scp = os.path.join(path, "feats.ark"), os.path.join(path, "feats.scp")
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for s in range(n_spk):
            spk = f"spk{s:03d}"
            envelope = 8.0 + sum(rng.normal(0.0, 1.2) * np.cos(np.pi * k * bins) for k in range(1, 6))
            shift = int(rng.integers(-feat_dim // 10, feat_dim // 10 + 1))
            scale = 1.0 + 0.4 * np.sin(np.pi * (bins * rng.uniform(1, 3) + rng.uniform(0, 2)))
            own_phones = np.roll(phones, shift, axis=1) * scale + rng.normal(0.0, 0.4, size=phones.shape)
            for u in range(n_utt):
                utt = f"{spk}-utt{u:03d}"
                frames = int(rng.integers(min_frames, max_frames + 1))
                sequence = np.repeat(rng.integers(0, len(phones), size=frames // 8 + 1), 8)[:frames]
                clean = envelope + own_phones[sequence] + rng.normal(0.0, 0.3, size=feat_dim) \
                    + rng.normal(0.0, 0.5, size=(frames, feat_dim))
                versions = {utt: clean}
                for suffix in copies:
                    versions[f"{utt}-{suffix}"] = np.logaddexp(clean, rng.uniform(4.0, 9.0)) \
                        + rng.normal(0.0, 0.3, size=(frames, feat_dim))
                for name, mat in versions.items():
                    writer(name, mat.astype(np.float32))
                    utt2spk[name] = spk
                    utt2num_frames[name] = frames
    # kaldiio writes in insertion order; Kaldi tools want C-sorted keys.
    with open(scp, encoding="utf-8") as f:
        rows = dict(line.split(maxsplit=1) for line in f.read().splitlines())
    write_table(scp, rows)
    write_table(os.path.join(path, "utt2spk"), utt2spk)
    write_table(os.path.join(path, "spk2utt"), utt2spk_to_spk2utt(utt2spk))
    write_table(os.path.join(path, "utt2num_frames"), utt2num_frames)
    return path

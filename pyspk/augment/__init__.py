"""Data augmentation as Kaldi data dirs: reverberation, additive noise, music and babble.

``rir`` (room impulse responses: RIRS_NOISES lists, a shoebox simulator,
reverberation), ``noise`` (MUSAN files or generated sources, SNR-exact mixing)
and ``augment_dir`` (augmented copies of a data dir, driven by
steps/augment_data_dir.sh).
"""

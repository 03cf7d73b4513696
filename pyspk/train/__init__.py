"""Generic training infrastructure shared by every training method.

``objective`` (the :class:`~pyspk.train.objective.Objective` interface a method implements),
``registry`` (the methods by name), ``schema`` (what a training config may hold, assembled
from each section's declaration), ``objectives`` (a config from file to trained model),
``trainer`` (the step loop), ``experiment`` (the experiment dir's rules: finished run, changed
config, resume), ``optim`` (optimiser, scaling rule, clipping), ``data`` / ``wav_data`` (crops
from a data dir, resumable distributed sampling), ``augment`` / ``online_aug`` (augmentation
on the device), ``schedules`` (cosine with warm-up) and ``checkpoint`` (atomic, weights_only,
RNG capture).

A new config key is one entry in its section's declaration, next to the code that reads it
(e.g. ``OPTIM_SECTION`` in ``optim``, ``DINO_SECTION`` in pyspk.ssl.dino); a new method is an
Objective subclass with its ``section`` and ``declaration`` and one line in
``registry.OBJECTIVES``. See docs/training.md, "Adding a config key or a method".
"""

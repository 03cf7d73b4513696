"""Generic training infrastructure shared by the self-supervised trainers.

``data`` (feature crops from a data dir, resumable distributed sampling),
``schedules`` (cosine with warm-up), ``checkpoint`` (atomic, weights_only,
RNG capture) and ``loop`` (the step loop around an :class:`~pyspk.train.loop.Objective`).
"""

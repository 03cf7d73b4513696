"""Fine-tuning a self-supervised backbone into an utterance-level classifier.

Labels come from ``<data-dir>/utt2label`` (``utt label``: emotion, language,
age group ...). The network is the backbone followed by a new head
(optional BatchNorm, dropout, linear layer over the embedding). Training runs
in *stages*, each a complete run of the generic :class:`~pyspk.train.trainer.Trainer`
in its own sub-directory (checkpoints, exact resume, logs, metrics)::

    finetune:
      stages:
        - {name: last, train: last, epochs: 4, lr: {base: 0.01, final: 0.001}}
        - {name: all, train: all, epochs: 6, lr: {base: 0.001, final: 1.0e-5}}

``train`` says what a stage updates: ``head`` (new head only), ``last`` (head
plus the backbone's last affine/embedding layers, the ``last_layers`` each model class declares) or
``all``. Frozen parts keep their BatchNorm statistics (they run in eval
mode). Stage 1 starts from the backbone file (or from random weights of the
same architecture with ``random_init``); each later stage from the end of the
one before. The finished classifier is ``<exp>/final.pt``, a backbone file
(so steps/extract_embeddings.sh reads the fine-tuned backbone) whose
``classifier`` key holds the head and the class names.

:func:`evaluate` embeds test utterances in chunks as extraction does, applies
the head and reports accuracy and unweighted average recall (UAR, the mean of
the per-class recalls).

Modules: ``labels`` (utt2label, metrics), ``network`` (backbone + head, what a
stage trains), ``objective`` (one stage's loss), ``stages`` (the staged run and
the exported classifier), ``evaluate``.
"""

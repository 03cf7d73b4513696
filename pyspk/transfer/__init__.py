"""Transfer of self-supervised backbones to utterance-level tasks (pyspk.transfer.finetune)."""

"""charforge.train: TRL + PEFT training (docs/design.md §2, §5), as a library the stages call.

- ``runner``: what every training stage shares (load the base, add a LoRA, train with TRL, save the
  adapter atomically with its provenance, account for the compute);
- ``config``: a params section to TRL's and PEFT's own config objects; ``data``: corpora as TRL
  datasets and the multi-turn label masks (the EM rows' reflection mask too);
- ``compose``: which model a variant is at each point (student, dpo, persona, em); ``fold``: adapters
  folded into a plain model, cached by content; ``tokens``: training tokens as the trainer counts them;
  ``accounting``: compute records.

The stages themselves (train-dpo, train-sft, persona, em-finetune) live in ``charforge.stages``.
"""

"""Train Pythia-style suites: sizes x seeds on one GPT-NeoX data order, Pythia's recipe and
checkpoint schedule, exact resume, torchrun data parallelism.

Modules: spec (the YAML schema), schedule (lr, checkpoint steps), optim (groups, AdamW, loss
scaler), checkpoint (files), metrics (logs), distributed (DDP/FSDP2), trainer (one member's
loop), callbacks (observers of checkpoints). The suite driver (pythia.suite) and `pythia verify`
(pythia.verify) read runs, so they stand above this package. See docs/training.md.
"""

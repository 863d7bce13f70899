"""Train Pythia-style suites: sizes x seeds on one GPT-NeoX data order, Pythia's recipe and
checkpoint schedule, exact resume, torchrun data parallelism, and run verification.

Modules: spec (the YAML schema), schedule (lr, checkpoint steps), optim (groups, AdamW, loss
scaler), checkpoint (files), metrics (logs), distributed (DDP/FSDP2), trainer (one member's
loop), suite (all members), verify (`pythia verify`). See docs/training.md.
"""

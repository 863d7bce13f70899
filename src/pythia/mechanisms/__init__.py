"""Mechanisms across checkpoints: what one forward pass of a checkpoint shows inside the model.

- `internals`: the residual stream after every block and each layer's attention pattern, read
  from the outside of our GPTNeoX with forward hooks (the model itself is untouched);
- `heads`: the repeated-random-token probe and the per-head scores of Olsson et al. (2022) and
  Elhage et al. (2021): previous-token, duplicate-token, induction, OV copying;
- `lens`: per-position next-token loss (in-context learning), the logit lens and a tuned lens
  (nostalgebraist 2020; Belrose et al. 2023).

The analyses `icl`, `heads`, `lens` and `phase_change` (pythia.analysis) apply these to every
checkpoint of a run; `pythia.load_hooked` gives a TransformerLens model of any checkpoint.
"""

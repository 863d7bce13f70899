"""Benchmarks through lm-evaluation-harness 0.4: the `pythia` lm-eval model (lm.py), offline task
loading (tasks.py), the per-checkpoint sweep behind the `eval` analysis (sweep.py), the demo's
tasks (demo_tasks.py), result naming (naming.py) and benchmark curves (plots.py).

Importing this package is cheap; lm-eval, transformers and torch load in the modules that need them.
"""

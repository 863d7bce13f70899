"""pythia: build and study suites of GPT-NeoX language models across training time and scale."""
__version__ = "0.1.0"

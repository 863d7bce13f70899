"""pythia: build and study suites of GPT-NeoX language models across training time and scale.

Public names are imported lazily (module __getattr__) so `import pythia` and the CLI stay fast
and do not pull in torch until a model is actually needed.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "pythia.config",
    "TrainingRecipe": "pythia.config",
    "PYTHIA_SIZES": "pythia.config",
    "model_config": "pythia.config",
    "custom_config": "pythia.config",
    "GPTNeoX": "pythia.model",
    "load_model": "pythia.run",
    "open_run": "pythia.run",
    "save_pretrained": "pythia.hf",
    "generate_greedy": "pythia.generate",
    "load_hooked": "pythia.hooked",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pythia' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

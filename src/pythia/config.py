"""Model shapes and training recipes of the Pythia suite, one explicit row per published size.

Everything here is plain Python (no torch import) so the table, the parameter counts and the
CLI stay instant. Sources: the per-size ymls of https://github.com/EleutherAI/pythia (models/*/)
and the HF model cards and config.json files.
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

GELU_KINDS = ("tanh", "exact")
INIT_METHODS = ("small_init", "normal")
OUTPUT_INIT_METHODS = ("wang_init", "scaled_normal")
PRECISIONS = ("fp32", "fp16", "bf16")
TOKENIZER_VOCAB = 50277  # GPT-NeoX-20B BPE incl. added tokens (spec section 4)


def padded_vocab_size(n_tokens: int, divisible_by: int = 128, model_parallel: int = 1) -> int:
    """GPT-NeoX's `_vocab_size_with_padding`: round up to a multiple of divisible_by * MP.

    This is why 6.9B (MP 2) has 50432 rows and 12B (MP 4) has 50688 while the rest have 50304.
    """
    if n_tokens <= 0 or divisible_by <= 0 or model_parallel <= 0:
        raise ValueError(f"padded_vocab_size needs positive arguments, got {n_tokens}, {divisible_by}, {model_parallel}")
    multiple = divisible_by * model_parallel
    return -(-n_tokens // multiple) * multiple


@dataclass(frozen=True, kw_only=True)
class TrainingRecipe:
    """Pythia's optimisation hyper-parameters (gpt-neox v1.0 semantics, spec section 5)."""

    lr: float
    """Peak learning rate after linear warmup."""
    min_lr: float
    """Floor of the cosine decay (0.1 x lr for every v1 size)."""
    warmup_fraction: float = 0.01
    """Warmup iterations = warmup_fraction x train_iters, a float as in GPT-NeoX (1430 for Pythia)."""
    global_batch: int = 1024
    """Sequences per optimizer step, over all data-parallel ranks and accumulation steps."""
    micro_batch: int
    """Sequences per GPU per forward pass in the original run."""
    seq_len: int = 2048
    train_iters: int = 143_000
    adam_betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    """Decoupled (AdamW); LayerNorm params and biases get 0."""
    grad_clip: float = 1.0
    precision: str = "fp16"
    """"fp32" | "fp16" | "bf16" (Pythia: fp16 with dynamic loss scaling, except pythia-1b in bf16)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainingRecipe.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"TrainingRecipe needs lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        for name in ("global_batch", "micro_batch", "seq_len", "train_iters"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"TrainingRecipe.{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"TrainingRecipe.warmup_fraction must be in [0, 1], got {self.warmup_fraction}")
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))

    @property
    def warmup_iters(self) -> float:
        return self.warmup_fraction * self.train_iters

    def replace(self, **changes: Any) -> TrainingRecipe:
        return dataclasses.replace(self, **changes)


def _small_recipe(**kw: Any) -> TrainingRecipe:
    """Recipe of the 14M-70M runs; also the default for custom configs."""
    return TrainingRecipe(**{"lr": 1.0e-3, "min_lr": 1.0e-4, "micro_batch": 32, **kw})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape, numerics and init of one GPT-NeoX network plus the recipe it was trained with."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    """The PADDED vocabulary (rows of embed_in / embed_out), not the tokenizer's 50277."""
    max_seq_len: int = 2048
    rotary_pct: float = 0.25
    """Fraction of each head's dims that get rotary (the first ones; rotate-half pairing)."""
    rotary_base: float = 10000.0
    layer_norm_eps: float = 1e-5
    gelu: str = "tanh"
    """"tanh" as trained (gpt-neox bias_gelu_fusion) or "exact" as the HF configs say."""
    init_method: str = "small_init"
    """small_init N(0, sqrt(2/(5d))) or normal N(0, init_std), for embed_in, qkv, h_to_4h, embed_out."""
    output_init_method: str = "wang_init"
    """wang_init N(0, 2/(L sqrt d)) or scaled_normal N(0, init_std/sqrt(2L)), for attention.dense, 4h_to_h."""
    init_std: float = 0.02
    training: TrainingRecipe = field(default_factory=_small_recipe)
    hf_repo: str | None = None
    """Hub repository of the published weights, where there is one."""

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"ModelConfig {self.name!r}: hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(f"ModelConfig.rotary_pct must be in [0, 1], got {self.rotary_pct}")
        if self.rotary_dims % 2:
            raise ValueError(
                f"ModelConfig {self.name!r}: rotary dims int({self.head_dim} x {self.rotary_pct}) = {self.rotary_dims} "
                "must be even (rotate-half pairs dim i with i + r/2)"
            )
        if self.gelu not in GELU_KINDS:
            raise ValueError(f"ModelConfig.gelu must be one of {GELU_KINDS}, got {self.gelu!r}")
        if self.init_method not in INIT_METHODS:
            raise ValueError(f"ModelConfig.init_method must be one of {INIT_METHODS}, got {self.init_method!r}")
        if self.output_init_method not in OUTPUT_INIT_METHODS:
            raise ValueError(
                f"ModelConfig.output_init_method must be one of {OUTPUT_INIT_METHODS}, got {self.output_init_method!r}"
            )
        if not isinstance(self.training, TrainingRecipe):
            raise ValueError(f"ModelConfig.training must be a TrainingRecipe, got {type(self.training).__name__}")

    # ---- derived shapes ------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def rotary_dims(self) -> int:
        """int(head_dim * rotary_pct), the formula of gpt-neox and transformers."""
        return int(self.head_dim * self.rotary_pct)

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size

    # ---- init stds (spec section 3.1) ----------------------------------------------------------
    @property
    def input_init_std(self) -> float:
        if self.init_method == "small_init":
            return (2.0 / (5.0 * self.hidden_size)) ** 0.5
        return self.init_std

    @property
    def output_init_std(self) -> float:
        if self.output_init_method == "wang_init":
            return 2.0 / (self.num_layers * self.hidden_size**0.5)
        return self.init_std / (2.0 * self.num_layers) ** 0.5

    # ---- counts --------------------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Closed form (spec section 6): L(12d^2 + 13d) + 2d [+ 2Vd untied embeddings]."""
        d, L = self.hidden_size, self.num_layers
        body = L * (12 * d * d + 13 * d) + 2 * d
        return body if non_embedding else body + 2 * self.vocab_size * d

    # ---- (de)serialisation ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["training"]["adam_betas"] = list(d["training"]["adam_betas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig.from_dict: unknown field(s) {unknown}; known: {sorted(known)}")
        training = d.pop("training", None)
        if isinstance(training, dict):
            tknown = {f.name for f in dataclasses.fields(TrainingRecipe)}
            tunknown = sorted(set(training) - tknown)
            if tunknown:
                raise ValueError(f"ModelConfig.from_dict: unknown training field(s) {tunknown}; known: {sorted(tknown)}")
            training = _small_recipe(**training)
        if training is not None:
            d["training"] = training
        return cls(**d)


def custom_config(
    *, num_layers: int, hidden_size: int, num_heads: int, vocab_size: int, name: str = "custom", **kw: Any
) -> ModelConfig:
    """A config of any shape for small suites; other fields as in ModelConfig (default: small recipe)."""
    return ModelConfig(
        name=name, num_layers=num_layers, hidden_size=hidden_size, num_heads=num_heads, vocab_size=vocab_size, **kw
    )


def _row(
    name: str, L: int, d: int, H: int, *, mp: int, lr: float, micro: int, precision: str = "fp16", **kw: Any
) -> ModelConfig:
    """One table row; `mp` only sets the vocab padding (128 x MP)."""
    return ModelConfig(
        name=name,
        num_layers=L,
        hidden_size=d,
        num_heads=H,
        vocab_size=padded_vocab_size(TOKENIZER_VOCAB, 128, mp),
        training=TrainingRecipe(lr=lr, min_lr=lr / 10, micro_batch=micro, precision=precision),
        hf_repo=f"EleutherAI/{name}",
        **kw,
    )


# One row per published size (ymls at EleutherAI/pythia@a19eecb models/<size>/pythia-<size>.yml;
# weights and config.json at https://huggingface.co/EleutherAI/<name>). Shapes, lr, micro batch
# from the ymls; vocab padding from the MP size; precision per README + issue #171.
PYTHIA_SIZES: OrderedDict[str, ModelConfig] = OrderedDict(
    (c.name, c)
    for c in (
        # https://huggingface.co/EleutherAI/pythia-14m
        _row("pythia-14m", 6, 128, 4, mp=1, lr=1.0e-3, micro=32),
        # https://huggingface.co/EleutherAI/pythia-31m
        _row("pythia-31m", 6, 256, 8, mp=1, lr=1.0e-3, micro=32),
        # https://huggingface.co/EleutherAI/pythia-70m
        _row("pythia-70m", 6, 512, 8, mp=1, lr=1.0e-3, micro=32),
        # https://huggingface.co/EleutherAI/pythia-160m
        _row("pythia-160m", 12, 768, 12, mp=1, lr=6.0e-4, micro=32),
        # https://huggingface.co/EleutherAI/pythia-410m
        _row("pythia-410m", 24, 1024, 16, mp=1, lr=3.0e-4, micro=32),
        # https://huggingface.co/EleutherAI/pythia-1b ; lr 2.5e-4 per the yml (README/paper say 3e-4),
        # bf16 after an fp16 loss spike (README; pythia-1b-deduped stayed fp16, issue #171)
        _row("pythia-1b", 16, 2048, 8, mp=1, lr=2.5e-4, micro=16, precision="bf16"),
        # https://huggingface.co/EleutherAI/pythia-1.4b
        _row("pythia-1.4b", 24, 2048, 16, mp=1, lr=2.0e-4, micro=16),
        # https://huggingface.co/EleutherAI/pythia-2.8b
        _row("pythia-2.8b", 32, 2560, 32, mp=1, lr=1.6e-4, micro=16),
        # https://huggingface.co/EleutherAI/pythia-6.9b ; init erratum (README, issue #135):
        # the yml lacks init keys, so gpt-neox used normal(0.02) / scaled_normal
        _row("pythia-6.9b", 32, 4096, 32, mp=2, lr=1.2e-4, micro=8, init_method="normal", output_init_method="scaled_normal"),
        # https://huggingface.co/EleutherAI/pythia-12b ; same erratum; L36/H40 (the deduped yml's L40/H36 is a typo, #162)
        _row("pythia-12b", 36, 5120, 40, mp=4, lr=1.2e-4, micro=8, init_method="normal", output_init_method="scaled_normal"),
    )
)


def model_config(name: str) -> ModelConfig:
    """Config of a published size: "pythia-70m", "pythia-70m-deduped", "70m", "EleutherAI/pythia-70m"."""
    key = name.strip().lower()
    if key.startswith("eleutherai/"):
        key = key[len("eleutherai/") :]
    deduped = key.endswith("-deduped")
    if deduped:
        key = key[: -len("-deduped")]
    if not key.startswith("pythia-"):
        key = "pythia-" + key
    if key not in PYTHIA_SIZES:
        names = ", ".join(PYTHIA_SIZES)
        raise ValueError(f"unknown Pythia size {name!r}; known: {names} (each also as NAME-deduped or short '70m')")
    config = PYTHIA_SIZES[key]
    if deduped:
        # Same shapes; pythia-1b-deduped trained in fp16, unlike pythia-1b (issue #171).
        training = config.training.replace(precision="fp16") if key == "pythia-1b" else config.training
        config = config.replace(name=f"{key}-deduped", hf_repo=f"EleutherAI/{key}-deduped", training=training)
    return config

"""Model shape: one typed config for every supported architecture."""

from dataclasses import dataclass, field

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")

# HF `architectures[0]` / `model_type` and GGUF `general.architecture` → our family name.
ARCHITECTURE_ALIASES = {
    "llama": "llama",
    "LlamaForCausalLM": "llama",
    "mistral": "llama",
    "MistralForCausalLM": "llama",
    "qwen2": "qwen2",
    "Qwen2ForCausalLM": "qwen2",
}


@dataclass
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    head_dim: int = 0  # 0: hidden_size // num_heads
    tie_embeddings: bool = False
    attention_bias: bool = False  # qwen2: q/k/v carry a bias
    rope_scaling: dict | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.hidden_size // self.num_heads
        assert self.num_heads % self.num_kv_heads == 0, "GQA needs heads divisible by KV heads"

    @classmethod
    def from_hf(cls, cfg: dict, arch: str) -> "ModelConfig":
        return cls(
            arch=arch,
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            max_position=cfg.get("max_position_embeddings", 4096),
            rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            head_dim=cfg.get("head_dim") or 0,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=arch == "qwen2" or bool(cfg.get("attention_bias", False)),
            rope_scaling=_hf_rope_scaling(cfg),
        )

    @classmethod
    def from_gguf(cls, meta: dict, arch: str, vocab_size: int, tie_embeddings: bool) -> "ModelConfig":
        gguf_arch = meta["general.architecture"]

        def key(name: str, default=None):
            return meta.get(f"{gguf_arch}.{name}", default)

        num_heads = key("attention.head_count")
        hidden = key("embedding_length")
        scaling = None
        if key("rope.scaling.type") in ("linear", "yarn") and key("rope.scaling.factor"):
            scaling = {"rope_type": key("rope.scaling.type"), "factor": float(key("rope.scaling.factor"))}
        return cls(
            arch=arch,
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_layers=key("block_count"),
            num_heads=num_heads,
            num_kv_heads=key("attention.head_count_kv", num_heads),
            intermediate_size=key("feed_forward_length"),
            max_position=key("context_length", 4096),
            rope_theta=float(key("rope.freq_base", 10000.0)),
            rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            head_dim=key("attention.key_length") or hidden // num_heads,
            tie_embeddings=tie_embeddings,
            attention_bias=arch == "qwen2",
            rope_scaling=scaling,
        )


def _hf_rope_scaling(cfg: dict) -> dict | None:
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not scaling:
        return None
    kind = scaling.get("rope_type") or scaling.get("type")
    if kind in (None, "default"):
        return None
    return dict(scaling, rope_type=kind)

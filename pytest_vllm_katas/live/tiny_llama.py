"""tiny-llama: a seeded, random-weight Llama checkpoint built locally in about two seconds.

Its tokenizer is byte-level with no merges: one byte is one token and EOS is id 256, exactly like
``mini_vllm``'s tokenizer, so prompt lengths are known by counting bytes. ``head_dim`` is 64
because vLLM's CPU attention backend refuses smaller heads (16 fails). The weights come from
numpy's PCG64, so the checkpoint is bit-identical with any torch version; the directory name
carries a digest of the spec, so changing the spec builds a new directory.

torch, tokenizers and transformers are imported inside the builders only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from .cache import MARKER, building, models_dir


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Shape and seed of the locally built checkpoint.

    Defaults: about 3 MB in bfloat16, the dtype vLLM on CPU would downcast float32 to anyway.
    """

    vocab_size: int = 512
    hidden_size: int = 256
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 2048
    dtype: str = "bfloat16"
    seed: int = 0

    def __post_init__(self) -> None:
        assert self.hidden_size % self.num_attention_heads == 0, "hidden must split into heads"
        assert self.num_attention_heads % self.num_key_value_heads == 0, "GQA groups must be even"
        assert self.head_dim >= 32, "vLLM's CPU attention refuses tiny heads; use head_dim 64"
        assert self.vocab_size >= TOKENIZER_VOCAB, "model vocab must cover the tokenizer's"
        assert self.dtype in _DTYPE_BYTES, f"dtype must be one of {sorted(_DTYPE_BYTES)}"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": _TINY_FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_TINY_FORMAT = 1

# Byte-level tokenizer: ids 0..255 are the bytes, then the special tokens.
EOS_TOKEN = "<|endoftext|>"
EOS_TOKEN_ID = 256
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOKENIZER_VOCAB = 259
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel pre-tokenizing emits)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def build_byte_tokenizer(out_dir: Path) -> None:
    """Write a Hugging Face fast tokenizer where token id == byte value and EOS == 256.

    No merges are learned, so it is deterministic without training and text round-trips exactly
    (any UTF-8 string encodes to ``len(text.encode())`` ids, no BOS added).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    specials = [EOS_TOKEN, IM_START, IM_END]
    for i, tok in enumerate(specials):
        vocab[tok] = EOS_TOKEN_ID + i
    assert len(vocab) == TOKENIZER_VOCAB
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=1 << 20,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)


def _tiny_weights(spec: TinyLlamaSpec) -> dict:
    """Seeded weights from numpy's PCG64, so the checkpoint is identical across torch versions."""
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    np_dtype = np.float32  # bfloat16/float16 are cast by the caller through torch-free safetensors

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np_dtype)

    h, hd = spec.hidden_size, spec.head_dim
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    w = {"model.embed_tokens.weight": normal(spec.vocab_size, h)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = normal(q_out, h)
        w[p + "self_attn.k_proj.weight"] = normal(kv_out, h)
        w[p + "self_attn.v_proj.weight"] = normal(kv_out, h)
        w[p + "self_attn.o_proj.weight"] = normal(h, q_out)
        w[p + "mlp.gate_proj.weight"] = normal(spec.intermediate_size, h)
        w[p + "mlp.up_proj.weight"] = normal(spec.intermediate_size, h)
        w[p + "mlp.down_proj.weight"] = normal(h, spec.intermediate_size)
        w[p + "input_layernorm.weight"] = np.ones(h, np_dtype)
        w[p + "post_attention_layernorm.weight"] = np.ones(h, np_dtype)
    w["model.norm.weight"] = np.ones(h, np_dtype)
    w["lm_head.weight"] = normal(spec.vocab_size, h)
    return w


def _tiny_config(spec: TinyLlamaSpec) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": spec.head_dim,
        "max_position_embeddings": spec.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": EOS_TOKEN_ID,
        "eos_token_id": EOS_TOKEN_ID,
        "torch_dtype": spec.dtype,
    }


def tiny_llama_path(spec: TinyLlamaSpec | None = None) -> Path:
    spec = spec or TinyLlamaSpec()
    return models_dir() / f"tiny-llama-{spec.digest()}"


def build_tiny_llama(spec: TinyLlamaSpec | None = None, *, force: bool = False) -> Path:
    """Build (once) the seeded tiny Llama + byte tokenizer; return its directory."""
    spec = spec or TinyLlamaSpec()
    target = tiny_llama_path(spec)
    if (target / MARKER).exists() and not force:
        return target
    if force:
        shutil.rmtree(target, ignore_errors=True)
    import torch  # only to write bfloat16; float32 would not need it
    from safetensors.torch import save_file

    with building(target) as out:
        weights = {
            k: torch.from_numpy(v).to(getattr(torch, spec.dtype)).contiguous()
            for k, v in _tiny_weights(spec).items()
        }
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(_tiny_config(spec), indent=2))
        (out / "generation_config.json").write_text(
            json.dumps({"bos_token_id": EOS_TOKEN_ID, "eos_token_id": EOS_TOKEN_ID}, indent=2)
        )
        build_byte_tokenizer(out)
        (out / MARKER).write_text(json.dumps({"model": "tiny-llama", **asdict(spec)}, indent=2))
    return target



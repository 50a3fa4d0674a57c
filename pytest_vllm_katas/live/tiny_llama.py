"""tiny-llama: the live tier's seeded, random-weight Llama checkpoint, built locally in a second.

Its tokenizer is byte-level with no merges: one byte is one token and EOS is id 256, exactly like
``mini_vllm``'s tokenizer, so prompt lengths are known by counting bytes. ``head_dim`` is 64
because vLLM's CPU attention backend refuses smaller heads (16 fails). The weights come from
``mini_vllm.models.tiny_llama.tiny_llama_weights`` (numpy's PCG64), written float32 and run as
bfloat16 (``torch_dtype`` in config.json), so the checkpoint is bit-identical with any torch
version; the directory name carries a digest of the spec, so changing the spec builds a new one.

Built with numpy, safetensors and tokenizers alone: no torch, no transformers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mini_vllm.models.tiny_llama import TinyLlamaSpec as WeightsSpec
from mini_vllm.models.tiny_llama import tiny_llama_config, write_seeded_checkpoint

from .cache import models_dir


@dataclass(frozen=True)
class TinyLlamaSpec(WeightsSpec):
    """Shape, seed and run dtype of the locally built checkpoint: mini_vllm's generator with
    vLLM-sized heads (head_dim 64), a vocabulary covering the chat tokens, std 0.02.

    Defaults: about 6 MB of float32 on disk, run in bfloat16 (what vLLM on CPU would downcast
    float32 to anyway).
    """

    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 512
    max_position_embeddings: int = 2048
    init_std: float = 0.02
    dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        super().__post_init__()
        assert self.head_dim >= 32, "vLLM's CPU attention refuses tiny heads; use head_dim 64"
        assert self.vocab_size >= TOKENIZER_VOCAB, "model vocab must cover the tokenizer's"
        assert self.dtype in _DTYPE_BYTES, f"dtype must be one of {sorted(_DTYPE_BYTES)}"

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": _TINY_FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# 2: float32 files with the run dtype in config.json, tokenizer written without transformers.
_TINY_FORMAT = 2

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


def build_byte_tokenizer(out_dir: Path) -> None:
    """Write a Hugging Face fast tokenizer where token id == byte value and EOS == 256.

    No merges are learned, so it is deterministic without training and text round-trips exactly
    (any UTF-8 string encodes to ``len(text.encode())`` ids, no BOS added).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from mini_vllm.tokenizer import (
        bytes_to_unicode,
        special_tokens_post_processor,
        write_hf_tokenizer,
    )

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    specials = [EOS_TOKEN, IM_START, IM_END]
    for i, tok in enumerate(specials):
        vocab[tok] = EOS_TOKEN_ID + i
    assert len(vocab) == TOKENIZER_VOCAB
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = special_tokens_post_processor()  # adds nothing: no BOS, no EOS
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    write_hf_tokenizer(
        out_dir,
        tok,
        {"eos_token": EOS_TOKEN, "pad_token": EOS_TOKEN},
        chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 20,
    )


def _tiny_config(spec: TinyLlamaSpec) -> dict:
    config = tiny_llama_config(spec, eos_token_id=EOS_TOKEN_ID)
    # The files hold float32; vLLM and transformers round to the run dtype when they load.
    config["torch_dtype"] = config["dtype"] = spec.dtype
    return config


def tiny_llama_path(spec: TinyLlamaSpec | None = None) -> Path:
    spec = spec or TinyLlamaSpec()
    return models_dir() / f"tiny-llama-{spec.digest()}"


def build_tiny_llama(spec: TinyLlamaSpec | None = None, *, force: bool = False) -> Path:
    """Build (once) the seeded tiny Llama + byte tokenizer; return its directory."""
    spec = spec or TinyLlamaSpec()

    def tokenizer_and_generation_config(out: Path) -> None:
        (out / "generation_config.json").write_text(
            json.dumps({"bos_token_id": EOS_TOKEN_ID, "eos_token_id": EOS_TOKEN_ID}, indent=2)
        )
        build_byte_tokenizer(out)

    return write_seeded_checkpoint(tiny_llama_path(spec), spec, _tiny_config(spec),
                                   name="tiny-llama", force=force,
                                   write_extra=tokenizer_and_generation_config)

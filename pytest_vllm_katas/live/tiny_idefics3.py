"""tiny-idefics3: a seeded, random-weight Idefics3 (SmolVLM-shaped) vision-language checkpoint.

What makes it SmolVLM-shaped is the image path, not the widths: the processor resizes the longest
edge to 2048, cuts 512x512 tiles and adds one 512x512 global image, exactly like
SmolVLM-256M-Instruct. What makes it tiny: a one-layer vision tower with 64-pixel patches (an 8x8
patch grid per tile) and a pixel-shuffle scale factor of 4, so each tile becomes
``(512 // 64) ** 2 // 4 ** 2 = 4`` image tokens (SmolVLM: 64), and a two-layer Llama of width 128
with vLLM-sized heads (head_dim 64: the CPU attention backend refuses smaller ones).

The tokenizer is byte-level (one byte, one token) plus the Idefics3 special tokens as single
tokens: ``<fake_token_around_image>``, ``<image>``, ``<global-img>``, ``<row_R_col_C>`` for R, C in
1..8, ``<|im_start|>`` and ``<end_of_utterance>`` (EOS). The weights are numpy PCG64 draws written
float32; the directory name carries a digest of the spec, so changing it builds a new checkpoint.

Built with numpy, safetensors and tokenizers alone (no torch, no transformers) in about a second,
atomically into the model cache (``cache.building``). Loads in transformers' ``Idefics3Processor``
/ ``Idefics3ImageProcessor`` (its PIL backend: torchvision is not needed) and in vLLM's
``Idefics3ForConditionalGeneration``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mini_vllm.models.tiny_llama import write_seeded_checkpoint

from .cache import models_dir

# Byte-level vocabulary: ids 0..255 are the bytes, then the special tokens in this order.
IM_START = "<|im_start|>"
END_OF_UTTERANCE = "<end_of_utterance>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
IMAGE_TOKEN = "<image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
MAX_GRID = 8  # 4096 (transformers' absolute cap) / 512: at most 8 tile rows or columns
ROW_COL_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, MAX_GRID + 1)
                  for c in range(1, MAX_GRID + 1)]
SPECIAL_TOKENS = [IM_START, END_OF_UTTERANCE, FAKE_IMAGE_TOKEN, IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN,
                  *ROW_COL_TOKENS]
TOKEN_IDS = {tok: 256 + i for i, tok in enumerate(SPECIAL_TOKENS)}
IMAGE_TOKEN_ID = TOKEN_IDS[IMAGE_TOKEN]
FAKE_IMAGE_TOKEN_ID = TOKEN_IDS[FAKE_IMAGE_TOKEN]
GLOBAL_IMAGE_TOKEN_ID = TOKEN_IDS[GLOBAL_IMAGE_TOKEN]
EOS_TOKEN_ID = TOKEN_IDS[END_OF_UTTERANCE]
TOKENIZER_VOCAB = 256 + len(SPECIAL_TOKENS)


@dataclass(frozen=True)
class TinyIdefics3Spec:
    """Shapes, processor sizes and seed of the locally built checkpoint."""

    # processor (SmolVLM-256M-Instruct's values)
    longest_edge: int = 2048  # every image is resized so its longest edge is this
    tile_size: int = 512  # max_image_size: the side of a tile and of the global image
    # vision tower: image_size == tile_size, (image_size // patch_size) ** 2 patches per tile
    patch_size: int = 64
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_heads: int = 2
    vision_layers: int = 1
    scale_factor: int = 4  # pixel shuffle: scale_factor ** 2 patches fold into one token
    # text model (Llama)
    vocab_size: int = 384
    hidden_size: int = 128
    intermediate_size: int = 256
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    max_position_embeddings: int = 4096
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        assert self.tile_size % self.patch_size == 0, "a tile must hold whole patches"
        side = self.tile_size // self.patch_size
        assert side % self.scale_factor == 0, "pixel shuffle needs the patch grid to divide"
        assert self.hidden_size // self.num_attention_heads >= 32, "vLLM's CPU attention"
        assert self.vocab_size >= TOKENIZER_VOCAB, "model vocab must cover the tokenizer's"

    @property
    def image_seq_len(self) -> int:
        """Image tokens per tile (and for the global image): patches / scale_factor ** 2."""
        return (self.tile_size // self.patch_size) ** 2 // self.scale_factor ** 2

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": _FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


_FORMAT = 1


def tiny_idefics3_weights(spec: TinyIdefics3Spec) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint, Hugging Face names, float32, seeded."""
    rng = np.random.Generator(np.random.PCG64(spec.seed))

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * spec.init_std).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, np.float32)

    w: dict[str, np.ndarray] = {}
    hv, iv, p = spec.vision_hidden_size, spec.vision_intermediate_size, spec.patch_size
    vis = "model.vision_model"
    w[f"{vis}.embeddings.patch_embedding.weight"] = normal(hv, 3, p, p)
    w[f"{vis}.embeddings.patch_embedding.bias"] = zeros(hv)
    w[f"{vis}.embeddings.position_embedding.weight"] = normal(
        (spec.tile_size // p) ** 2, hv)
    for i in range(spec.vision_layers):
        pre = f"{vis}.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[f"{pre}.self_attn.{proj}.weight"] = normal(hv, hv)
            w[f"{pre}.self_attn.{proj}.bias"] = zeros(hv)
        for norm in ("layer_norm1", "layer_norm2"):
            w[f"{pre}.{norm}.weight"], w[f"{pre}.{norm}.bias"] = ones(hv), zeros(hv)
        w[f"{pre}.mlp.fc1.weight"], w[f"{pre}.mlp.fc1.bias"] = normal(iv, hv), zeros(iv)
        w[f"{pre}.mlp.fc2.weight"], w[f"{pre}.mlp.fc2.bias"] = normal(hv, iv), zeros(hv)
    w[f"{vis}.post_layernorm.weight"], w[f"{vis}.post_layernorm.bias"] = ones(hv), zeros(hv)

    h, it = spec.hidden_size, spec.intermediate_size
    w["model.connector.modality_projection.proj.weight"] = normal(
        h, hv * spec.scale_factor ** 2)
    txt = "model.text_model"
    hd = h // spec.num_attention_heads
    kv = spec.num_key_value_heads * hd
    w[f"{txt}.embed_tokens.weight"] = normal(spec.vocab_size, h)
    for i in range(spec.num_hidden_layers):
        pre = f"{txt}.layers.{i}"
        w[f"{pre}.self_attn.q_proj.weight"] = normal(h, h)
        w[f"{pre}.self_attn.k_proj.weight"] = normal(kv, h)
        w[f"{pre}.self_attn.v_proj.weight"] = normal(kv, h)
        w[f"{pre}.self_attn.o_proj.weight"] = normal(h, h)
        w[f"{pre}.mlp.gate_proj.weight"] = normal(it, h)
        w[f"{pre}.mlp.up_proj.weight"] = normal(it, h)
        w[f"{pre}.mlp.down_proj.weight"] = normal(h, it)
        w[f"{pre}.input_layernorm.weight"] = ones(h)
        w[f"{pre}.post_attention_layernorm.weight"] = ones(h)
    w[f"{txt}.norm.weight"] = ones(h)
    w["lm_head.weight"] = normal(spec.vocab_size, h)
    return w


def tiny_idefics3_config(spec: TinyIdefics3Spec) -> dict:
    """``config.json`` for ``Idefics3ForConditionalGeneration``."""
    return {
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "image_token_id": IMAGE_TOKEN_ID,
        "scale_factor": spec.scale_factor,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "dtype": "float32",
        "bos_token_id": TOKEN_IDS[IM_START],
        "eos_token_id": EOS_TOKEN_ID,
        "pad_token_id": EOS_TOKEN_ID,
        "vision_config": {
            "model_type": "idefics3_vision",
            "hidden_size": spec.vision_hidden_size,
            "intermediate_size": spec.vision_intermediate_size,
            "num_attention_heads": spec.vision_heads,
            "num_hidden_layers": spec.vision_layers,
            "image_size": spec.tile_size,
            "patch_size": spec.patch_size,
            "num_channels": 3,
            "hidden_act": "gelu_pytorch_tanh",
            "layer_norm_eps": 1e-6,
        },
        "text_config": {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": spec.vocab_size,
            "hidden_size": spec.hidden_size,
            "intermediate_size": spec.intermediate_size,
            "num_hidden_layers": spec.num_hidden_layers,
            "num_attention_heads": spec.num_attention_heads,
            "num_key_value_heads": spec.num_key_value_heads,
            "head_dim": spec.hidden_size // spec.num_attention_heads,
            "max_position_embeddings": spec.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": TOKEN_IDS[IM_START],
            "eos_token_id": EOS_TOKEN_ID,
            "pad_token_id": EOS_TOKEN_ID,
        },
    }


def processor_files(spec: TinyIdefics3Spec) -> dict[str, dict]:
    """``preprocessor_config.json`` and ``processor_config.json``: SmolVLM's image path."""
    return {
        "preprocessor_config.json": {
            "image_processor_type": "Idefics3ImageProcessor",
            "processor_class": "Idefics3Processor",
            "do_convert_rgb": True,
            "do_resize": True,
            "size": {"longest_edge": spec.longest_edge},
            "resample": 1,  # LANCZOS
            "do_image_splitting": True,
            "max_image_size": {"longest_edge": spec.tile_size},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "do_pad": True,
        },
        "processor_config.json": {
            "processor_class": "Idefics3Processor",
            "image_seq_len": spec.image_seq_len,
        },
    }


def build_tokenizer(out_dir: Path) -> None:
    """Byte-level fast tokenizer (no merges) plus the Idefics3 special tokens, one id each."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from mini_vllm.tokenizer import (
        bytes_to_unicode,
        special_tokens_post_processor,
        write_hf_tokenizer,
    )

    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    vocab.update(TOKEN_IDS)
    assert len(vocab) == TOKENIZER_VOCAB
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = special_tokens_post_processor()  # adds nothing: no BOS, no EOS
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    write_hf_tokenizer(
        out_dir, tok,
        {"bos_token": IM_START, "eos_token": END_OF_UTTERANCE, "pad_token": END_OF_UTTERANCE},
        model_max_length=1 << 20,
    )


def tiny_idefics3_path(spec: TinyIdefics3Spec | None = None) -> Path:
    spec = spec or TinyIdefics3Spec()
    return models_dir() / f"tiny-idefics3-{spec.digest()}"


def build_tiny_idefics3(spec: TinyIdefics3Spec | None = None, *, force: bool = False) -> Path:
    """Build (once) the seeded tiny Idefics3 with its tokenizer and processor files; return its
    directory (reused when already built, unless ``force``)."""
    spec = spec or TinyIdefics3Spec()

    def write_extra(out: Path) -> None:
        for name, content in processor_files(spec).items():
            (out / name).write_text(json.dumps(content, indent=2))
        (out / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": TOKEN_IDS[IM_START], "eos_token_id": EOS_TOKEN_ID}, indent=2))
        build_tokenizer(out)

    return write_seeded_checkpoint(tiny_idefics3_path(spec), spec, tiny_idefics3_config(spec),
                                   name="tiny-idefics3", force=force, write_extra=write_extra,
                                   weights=tiny_idefics3_weights)

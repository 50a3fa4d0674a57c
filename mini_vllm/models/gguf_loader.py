"""GGUF -> Hugging Face checkpoint directory, in numpy: no torch, no transformers.

Upstream twin: ``vllm/model_executor/model_loader/gguf_loader.py`` (``GGUFModelLoader``). vLLM maps
llama.cpp's tensor names onto its model's and keeps the weights quantized for its GGUF kernels.
Ours dequantizes every tensor to float32 once and writes an ordinary Hugging Face directory
(``config.json``, ``model.safetensors``, tokenizer files, chat template) that vLLM, transformers
and mini_vllm all load offline.

Three things a GGUF stores differently from a Hugging Face checkpoint:

* names: ``blk.3.attn_q.weight`` is ``model.layers.3.self_attn.q_proj.weight`` (``GGUF_TO_HF``);
* Q and K rows: llama.cpp permutes them for its RoPE layout (rotate adjacent pairs), Hugging
  Face rotates the two halves of each head; ``unpermute_rope_rows`` puts them back;
* the tokenizer: no ``tokenizer.json``, only the vocabulary, merges and special ids as metadata
  (``tokenizer.ggml.*``), rebuilt here with the ``tokenizers`` package alone.

Weights are written float32 with ``torch_dtype`` bfloat16 in ``config.json``: vLLM and
transformers round them to bfloat16 on load, exactly as a bfloat16 file would have been rounded
when written. Only Llama-architecture files with a byte-level BPE tokenizer are supported;
anything else is refused with a ``ValueError`` naming the file and the key or tensor at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mini_vllm.models.cache import MARKER, building
from mini_vllm.models.cache import progress as show_progress
from mini_vllm.tokenizer import (
    bytes_to_unicode,
    special_tokens_post_processor,
    write_hf_tokenizer,
)

ARCHITECTURE = "llama"

#: llama.cpp's tensor names (without ``.weight``) -> Hugging Face Llama's. ``output`` is absent
#: when the head is tied to the embeddings.
GGUF_TO_HF = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
#: The same inside one decoder layer: ``blk.N.<key>`` -> ``model.layers.N.<value>``.
GGUF_LAYER_TO_HF = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# llama.cpp's token types (llama_token_type): 3 is CONTROL, 4 is USER_DEFINED.
_CONTROL, _USER_DEFINED = 3, 4
# Pre-tokenizers that split text like GPT-2's ByteLevel regex. transformers builds the same
# tokenizer for them; others (llama-bpe, qwen2, ...) need a different split, not written here.
_GPT2_SPLIT_PRE = {"default", "gpt2", "gpt-2", "smollm"}

_MISSING = object()


def hf_tensor_name(gguf_name: str) -> str | None:
    """The Hugging Face name of a llama.cpp tensor, or None when it is not a Llama tensor."""
    stem, dot, suffix = gguf_name.rpartition(".")
    if dot == "" or suffix != "weight":
        return None
    if stem in GGUF_TO_HF:
        return f"{GGUF_TO_HF[stem]}.weight"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit():
        layer, kind = int(parts[1]), parts[2]
        if kind in GGUF_LAYER_TO_HF:
            return f"model.layers.{layer}.{GGUF_LAYER_TO_HF[kind]}.weight"
    return None


def unpermute_rope_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (``convert_hf_to_gguf.py: LlamaModel.permute``).

    Within each head, Hugging Face keeps the rows RoPE pairs up as the first and second half
    (row i with row i + d/2); llama.cpp interleaves them (row 2i with row 2i + 1) because its
    kernel rotates adjacent pairs. ``n_head`` is the number of heads these rows hold (the KV heads
    for K). transformers undoes it the same way in ``modeling_gguf_pytorch_utils.py``.
    """
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ValueError(f"{rows} rows do not split into {n_head} heads of even size")
    half = rows // n_head // 2
    w = weight.reshape(n_head, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(w.swapaxes(1, 2).reshape(weight.shape))


@dataclass
class GGUFCheckpoint:
    """A validated Llama GGUF: its Hugging Face config, tokenizer metadata and tensor index.

    Nothing is dequantized yet: ``gguf_weights_iterator`` does that one tensor at a time.
    """

    path: Path
    config: dict[str, Any]
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    add_bos_token: bool
    add_eos_token: bool
    chat_template: str | None
    #: Hugging Face name -> the reader's tensor (a view into the memory-mapped file).
    tensors: dict[str, Any]

    def special_token(self, key: str) -> str | None:
        token_id = self.config.get(key)
        return None if token_id is None else self.tokens[token_id]


class _Metadata:
    """GGUF metadata by key, with errors that name the file and the key."""

    def __init__(self, path: Path, reader: Any) -> None:
        self.path, self.fields = path, reader.fields

    def get(self, key: str, default: Any = _MISSING) -> Any:
        field = self.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise ValueError(f"{self.path}: metadata key {key!r} is missing")
            return default
        try:
            return field.contents()
        except Exception as exc:  # a field whose bytes do not decode as its declared type
            raise ValueError(f"{self.path}: metadata key {key!r} is unreadable ({exc})") from None

    def integer(self, key: str, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is not default and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{self.path}: metadata key {key!r} must be an integer, got {value!r}")
        return value


def read_gguf(path: str | Path) -> GGUFCheckpoint:
    """Open and validate a Llama GGUF: metadata, tokenizer, every tensor's name and shape."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such GGUF file")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, IndexError, KeyError... on bad bytes
        where = _tensor_being_read(exc)
        at = f" at tensor {where!r}" if where else ""
        raise ValueError(f"{path}: not a readable GGUF file, truncated or corrupt{at}: {exc}") \
            from None
    meta = _Metadata(path, reader)
    arch = meta.get("general.architecture")
    if arch != ARCHITECTURE:
        raise ValueError(
            f"{path}: metadata key 'general.architecture' is {arch!r}; only {ARCHITECTURE!r} "
            "(Llama) GGUFs can be converted"
        )
    tokenizer_model = meta.get("tokenizer.ggml.model")
    if tokenizer_model != "gpt2":
        raise ValueError(f"{path}: metadata key 'tokenizer.ggml.model' is {tokenizer_model!r}; "
                         "only byte-level BPE ('gpt2') tokenizers are supported")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _GPT2_SPLIT_PRE:
        raise ValueError(f"{path}: metadata key 'tokenizer.ggml.pre' is {pre!r}; supported: "
                         f"{sorted(_GPT2_SPLIT_PRE)}")
    tokens = meta.get("tokenizer.ggml.tokens")
    token_types = meta.get("tokenizer.ggml.token_type", [])
    if token_types and len(token_types) != len(tokens):
        raise ValueError(f"{path}: metadata key 'tokenizer.ggml.token_type' has "
                         f"{len(token_types)} entries for {len(tokens)} tokens")

    by_name = {tensor.name: tensor for tensor in reader.tensors}
    for gguf_name in by_name:
        if hf_tensor_name(gguf_name) is None:
            raise ValueError(f"{path}: tensor {gguf_name!r} is not part of a Llama checkpoint")
    config = _llama_config(meta, tokens, tied="output.weight" not in by_name)
    expected = _expected_shapes(config)
    extra = sorted(by_name.keys() - expected.keys())
    if extra:
        raise ValueError(f"{path}: tensor {extra[0]!r} is not expected by the metadata "
                         f"(llama.block_count is {config['num_hidden_layers']})")
    for gguf_name, shape in expected.items():
        if gguf_name not in by_name:
            raise ValueError(f"{path}: tensor {gguf_name!r} is missing")
        # GGUF lists dimensions fastest first (ggml's ne[]); numpy and Hugging Face slowest first.
        got = tuple(int(d) for d in reversed(by_name[gguf_name].shape))
        if got != shape:
            raise ValueError(f"{path}: tensor {gguf_name!r} has shape {got}, expected {shape} "
                             "from the metadata")
    return GGUFCheckpoint(
        path=path,
        config=config,
        tokens=tokens,
        token_types=token_types,
        merges=meta.get("tokenizer.ggml.merges"),
        add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        chat_template=meta.get("tokenizer.chat_template", None),
        tensors={hf_tensor_name(name): by_name[name] for name in expected},
    )


def _tensor_being_read(exc: BaseException) -> str | None:
    """The tensor GGUFReader was slicing out of the file when it failed, if it got that far.

    A truncated file fails there, with a numpy message that names no tensor; the reader's frame
    still holds the name. Private to gguf-py, so a missing local just means no name.
    """
    tb = exc.__traceback__
    name = None
    while tb is not None:
        name = tb.tb_frame.f_locals.get("tensor_name", name)
        tb = tb.tb_next
    return name if isinstance(name, str) else None


def _llama_config(meta: _Metadata, tokens: list[str], *, tied: bool) -> dict[str, Any]:
    """config.json from the ``llama.*`` keys, as transformers' GGUF loader would derive it."""
    hidden = meta.integer("llama.embedding_length")
    heads = meta.integer("llama.attention.head_count")
    if not heads or hidden % heads:
        raise ValueError(f"{meta.path}: metadata key 'llama.attention.head_count' ({heads}) does "
                         f"not divide llama.embedding_length ({hidden})")
    kv_heads = meta.integer("llama.attention.head_count_kv", heads)
    if not kv_heads or heads % kv_heads:
        raise ValueError(f"{meta.path}: metadata key 'llama.attention.head_count_kv' ({kv_heads}) "
                         f"does not divide llama.attention.head_count ({heads})")
    rope_theta = float(meta.get("llama.rope.freq_base", 10000.0))
    scaling = meta.get("llama.rope.scaling.type", "none")
    if scaling != "none":
        raise ValueError(f"{meta.path}: metadata key 'llama.rope.scaling.type' is {scaling!r}; "
                         "only plain RoPE is supported")
    vocab_size = meta.integer("llama.vocab_size", len(tokens))
    if vocab_size < len(tokens):
        raise ValueError(f"{meta.path}: metadata key 'llama.vocab_size' ({vocab_size}) is smaller "
                         f"than the {len(tokens)} tokens of tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": meta.integer("llama.feed_forward_length"),
        "num_hidden_layers": meta.integer("llama.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": meta.integer("llama.rope.dimension_count", hidden // heads),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "rms_norm_eps": float(meta.get("llama.attention.layer_norm_rms_epsilon")),
        # transformers 4 reads the top-level key, transformers 5 and vLLM 0.32 rope_parameters.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_theta": rope_theta, "rope_type": "default"},
        "max_position_embeddings": meta.integer("llama.context_length"),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
    }
    if config["head_dim"] * heads != hidden:
        raise ValueError(f"{meta.path}: metadata key 'llama.rope.dimension_count' "
                         f"({config['head_dim']}) times {heads} heads is not {hidden}")
    for key, name in (("bos_token_id", "bos"), ("eos_token_id", "eos"),
                      ("pad_token_id", "padding"), ("unk_token_id", "unknown")):
        gguf_key = f"tokenizer.ggml.{name}_token_id"
        token_id = meta.integer(gguf_key, None)
        if token_id is None:
            continue
        if not 0 <= token_id < len(tokens):
            raise ValueError(f"{meta.path}: metadata key {gguf_key!r} ({token_id}) is not a token")
        config[key] = token_id
    if "eos_token_id" not in config:
        raise ValueError(f"{meta.path}: metadata key 'tokenizer.ggml.eos_token_id' is missing")
    # The files hold float32; the model runs in bfloat16 like the checkpoint it was quantized from.
    config["torch_dtype"] = config["dtype"] = "bfloat16"
    return config


def _expected_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """llama.cpp name -> Hugging Face [out, in] shape, for every tensor the config implies."""
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"token_embd.weight": (vocab, h), "output_norm.weight": (h,)}
    if not config["tie_word_embeddings"]:
        shapes["output.weight"] = (vocab, h)
    per_layer = {
        "attn_norm": (h,), "attn_q": (q, h), "attn_k": (kv, h), "attn_v": (kv, h),
        "attn_output": (h, q), "ffn_norm": (h,), "ffn_gate": (inter, h), "ffn_up": (inter, h),
        "ffn_down": (h, inter),
    }
    for i in range(config["num_hidden_layers"]):
        shapes.update({f"blk.{i}.{kind}.weight": shape for kind, shape in per_layer.items()})
    return shapes


def gguf_weights_iterator(checkpoint: GGUFCheckpoint) -> Iterator[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 [out, in] array) for every tensor, Q/K rows un-permuted.

    Upstream twin: ``gguf_quant_weights_iterator`` in vLLM's ``weight_utils.py``, which yields
    the quantized blocks instead.
    """
    from gguf.quants import dequantize

    heads = checkpoint.config["num_attention_heads"]
    kv_heads = checkpoint.config["num_key_value_heads"]
    for name, tensor in checkpoint.tensors.items():
        shape = tuple(int(d) for d in reversed(tensor.shape))
        try:
            # A copy: F32 tensors come back as views of the memory-mapped file.
            weight = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        except (NotImplementedError, ValueError) as exc:
            raise ValueError(f"{checkpoint.path}: tensor {tensor.name!r} of type "
                             f"{tensor.tensor_type.name} cannot be dequantized ({exc})") from None
        weight = weight.reshape(shape)
        if name.endswith("self_attn.q_proj.weight"):
            weight = unpermute_rope_rows(weight, heads)
        elif name.endswith("self_attn.k_proj.weight"):
            weight = unpermute_rope_rows(weight, kv_heads)
        yield name, weight


def build_gguf_tokenizer(checkpoint: GGUFCheckpoint) -> Any:
    """The byte-level BPE tokenizer a GGUF describes, as transformers' GGUF loader builds it.

    Vocabulary and merges as the file spells them (a token outside the byte alphabet is
    re-spelled through it); control tokens become special added tokens, user-defined ones plain
    added tokens, so both stay whole instead of being cut into bytes. One difference: BOS/EOS are
    added when ``tokenizer.ggml.add_bos_token`` / ``add_eos_token`` say so, as llama.cpp does;
    transformers ignores those keys (SmolLM2 sets neither).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {
        tok if set(tok) <= alphabet else "".join(spelling[b] for b in tok.encode("utf-8")): i
        for i, tok in enumerate(checkpoint.tokens)
    }
    merges = [tuple(m.split(" ")) for m in checkpoint.merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None,
                                     continuing_subword_prefix="", end_of_word_suffix="",
                                     fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    added: dict[str, tuple[str, int] | None] = {}
    for flag, key in ((checkpoint.add_bos_token, "bos_token_id"),
                      (checkpoint.add_eos_token, "eos_token_id")):
        token_id = checkpoint.config.get(key)
        if flag and token_id is not None:
            added[key] = (checkpoint.tokens[token_id], token_id)
        else:
            added[key] = None
    tokenizer.post_processor = special_tokens_post_processor(
        bos=added["bos_token_id"], eos=added["eos_token_id"]
    )
    types = checkpoint.token_types or [0] * len(checkpoint.tokens)
    # A control token outside the byte alphabet is a llama.cpp mislabel; adding it would grow the
    # vocabulary past the model's (transformers skips it too).
    tokenizer.add_special_tokens([
        AddedToken(tok, special=True, normalized=False)
        for tok, kind in zip(checkpoint.tokens, types, strict=True)
        if kind == _CONTROL and set(tok) <= alphabet
    ])
    tokenizer.add_tokens([
        AddedToken(tok, special=False, normalized=False)
        for tok, kind in zip(checkpoint.tokens, types, strict=True)
        if kind == _USER_DEFINED and tok in vocab
    ])
    return tokenizer


def convert_gguf(
    gguf_path: str | Path,
    target: str | Path,
    *,
    marker: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Convert a Llama GGUF into a Hugging Face directory at ``target``, published atomically.

    Everything is validated before anything is written; the directory is built next to
    ``target`` and renamed into place with the ``katas-model.json`` marker (``marker``) last, so
    a failure at any point leaves no directory behind.
    """
    from safetensors.numpy import save_file

    checkpoint = read_gguf(gguf_path)
    config = checkpoint.config
    target = Path(target)
    with building(target) as out:
        weights = {}
        total = len(checkpoint.tensors)
        for done, (name, weight) in enumerate(gguf_weights_iterator(checkpoint), start=1):
            weights[name] = weight
            if progress:
                show_progress("dequantizing GGUF", done, total)
        # transformers 4 refuses a file whose metadata "format" names no framework it knows.
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
        del weights
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                      if k in config}
        (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        special_tokens = {
            name: token
            for name in ("bos_token", "eos_token", "pad_token", "unk_token")
            if (token := checkpoint.special_token(f"{name}_id")) is not None
        }
        write_hf_tokenizer(
            out,
            build_gguf_tokenizer(checkpoint),
            special_tokens,
            chat_template=checkpoint.chat_template,
        )
        (out / MARKER).write_text(
            json.dumps(marker or {"source": checkpoint.path.name}, indent=2) + "\n"
        )
    return target

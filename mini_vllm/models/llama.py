"""Llama in numpy: embedding, RMSNorm, rotary embedding, grouped-query attention over the paged
KV cache, SwiGLU MLP and the LM head.

Upstream twin: ``vllm/model_executor/models/llama.py`` (``LlamaForCausalLM``, ``LlamaModel``,
``LlamaDecoderLayer``, ``LlamaAttention``, ``LlamaMLP``), with ``RMSNorm`` from
``layers/layernorm.py`` and the rotary embedding from ``layers/rotary_embedding.py``. The same
classes, parameter names and weight loading (q/k/v and gate/up stacked into ``qkv_proj`` and
``gate_up_proj`` by ``load_weights``' ``stacked_params_mapping``); the checkpoint is Hugging Face's.

Tokens arrive packed (varlen): ``input_ids`` and ``positions`` are ``[num_tokens]`` for every
scheduled request back to back, as ``mini_vllm.attention`` describes. Everything but attention is
row-wise, so only attention looks at the request boundaries.

Differences from upstream, for numpy's sake:

* A projection's weight is kept as ``[in, out]`` (upstream: ``[out, in]``) so that ``x @ w`` is a
  plain row-major GEMM; with OpenBLAS that is faster than ``x @ w.T``, most of all for the LM
  head at batch 1. ``load_weights`` transposes once.
* With tied embeddings the LM head is a transposed copy of ``embed_tokens`` (refreshed whenever
  the embedding is loaded), not the same array; ``named_parameters`` lists the embedding only.
* Every parameter, activation and the rotary cos/sin cache are in the model's dtype (float32 or
  float64). The cos/sin cache is computed in float64 before the cast.

LoRA (``mini_vllm.lora``, phase 11): each projection goes through :func:`linear`, which is
``x @ weight`` unless ``mini_vllm.lora`` installed a hook for it in the module's ``lora_layers``
(upstream swaps the layer for a ``*WithLoRA`` wrapper instead). Without LoRA the dict is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from mini_vllm.attention import AttentionMetadata, write_to_kv_cache
from mini_vllm.forward_context import get_forward_context

_SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _rope_theta(config: dict) -> float:
    # transformers 5 writes "rope_parameters": {"rope_theta": ...}; older configs the top level.
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not supported (only the default RoPE)")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


class RMSNorm:
    """``x / rms(x) * weight``; with ``residual``, first ``residual += x`` (in place) and
    normalize that, returning ``(normed, residual)`` as upstream's fused add-norm does."""

    def __init__(self, hidden_size: int, eps: float, dtype: np.dtype) -> None:
        self.weight = np.ones(hidden_size, dtype)
        self.eps = eps

    def __call__(self, x: np.ndarray, residual: np.ndarray | None = None
                 ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if residual is not None:
            residual += x
            x = residual
        mean_square = np.einsum("ij,ij->i", x, x) / x.shape[-1]
        inv_rms = 1.0 / np.sqrt(mean_square + self.eps)
        out = x * inv_rms[:, None]
        out *= self.weight
        return out if residual is None else (out, residual)


class RotaryEmbedding:
    """Neox-style RoPE (rotate-half, as Hugging Face Llama) from a precomputed cos/sin cache.

    Dimension ``i < head_dim / 2`` is paired with ``i + head_dim / 2`` and the pair is rotated
    by ``position * rope_theta ** (-2i / head_dim)``.
    """

    def __init__(self, head_dim: int, max_position: int, base: float, dtype: np.dtype) -> None:
        self.head_dim = head_dim
        inv_freq = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        freqs = np.outer(np.arange(max_position, dtype=np.float64), inv_freq)
        # [max_position, head_dim]: cos in the first half, sin in the second, as upstream.
        self.cos_sin_cache = np.concatenate([np.cos(freqs), np.sin(freqs)], axis=-1).astype(dtype)
        # Every layer rotates at the same positions within one forward pass: gather once.
        self._positions: np.ndarray | None = None
        self._cos_sin: tuple[np.ndarray, np.ndarray] | None = None

    def _cos_sin_at(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if positions is not self._positions:  # holding the array keeps `is` meaningful
            cos_sin = self.cos_sin_cache[positions][:, None, :]  # [T, 1, head_dim]
            half = self.head_dim // 2
            self._positions, self._cos_sin = positions, (cos_sin[..., :half], cos_sin[..., half:])
        return self._cos_sin

    def __call__(self, positions: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Rotate ``x`` (``[num_tokens, num_heads, head_dim]``); returns a new array."""
        half = self.head_dim // 2
        cos, sin = self._cos_sin_at(positions)
        x1, x2 = x[..., :half], x[..., half:]
        out = np.empty(x.shape, x.dtype)
        first, second = out[..., :half], out[..., half:]
        np.multiply(x1, cos, out=first)
        first -= x2 * sin
        np.multiply(x2, cos, out=second)
        second += x1 * sin
        return out


def linear(module: object, name: str, x: np.ndarray) -> np.ndarray:
    """``x @ module.<name>`` (a ``[in, out]`` weight), or through the LoRA hook installed for it
    (``module.lora_layers[name](x, weight)``, see ``mini_vllm.lora.models.LoRALinear``)."""
    weight = getattr(module, name)
    hook = module.lora_layers.get(name) if module.lora_layers else None  # type: ignore[attr-defined]
    return x @ weight if hook is None else hook(x, weight)


class LlamaMLP:
    """SwiGLU: ``down(silu(gate(x)) * up(x))`` with gate and up fused in one matmul."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: np.dtype) -> None:
        self.intermediate_size = intermediate_size
        self.gate_up_proj = np.zeros((hidden_size, 2 * intermediate_size), dtype)
        self.down_proj = np.zeros((intermediate_size, hidden_size), dtype)
        self.lora_layers: dict = {}  # projection name -> LoRA hook (mini_vllm.lora); empty: none

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return linear(self, "down_proj", silu_and_mul(linear(self, "gate_up_proj", x)))


def silu_and_mul(gate_up: np.ndarray) -> np.ndarray:
    """``silu(gate) * up`` for a fused ``[gate | up]`` row block (upstream's ``SiluAndMul``,
    ``layers/activation.py``)."""
    half = gate_up.shape[-1] // 2
    gate, up = gate_up[..., :half], gate_up[..., half:]
    # silu(g) = g * sigmoid(g), sigmoid(g) = (1 + tanh(g / 2)) / 2: no exp to overflow.
    act = np.multiply(gate, 0.5)
    np.tanh(act, out=act)
    act += 1.0
    act *= 0.5
    act *= gate
    act *= up
    return act


class LlamaAttention:
    """Grouped-query attention: fused QKV, RoPE on Q and K, this step's K/V written to the paged
    cache, attention over the cached context, output projection."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 rotary_emb: RotaryEmbedding, dtype: np.dtype) -> None:
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.q_size = num_heads * head_dim
        self.kv_size = num_kv_heads * head_dim
        self.scaling = head_dim ** -0.5
        self.rotary_emb = rotary_emb  # one cache shared by every layer
        self.qkv_proj = np.zeros((hidden_size, self.q_size + 2 * self.kv_size), dtype)
        self.o_proj = np.zeros((self.q_size, hidden_size), dtype)
        self.lora_layers: dict = {}  # projection name -> LoRA hook (mini_vllm.lora); empty: none

    def __call__(self, positions: np.ndarray, hidden_states: np.ndarray,
                 kv_cache: tuple[np.ndarray, np.ndarray],
                 attn_metadata: AttentionMetadata) -> np.ndarray:
        num_tokens = hidden_states.shape[0]
        qkv = self._qkv(hidden_states)
        # Q and K sit side by side in qkv, so one RoPE call rotates both.
        qk = qkv[:, :self.q_size + self.kv_size].reshape(
            num_tokens, self.num_heads + self.num_kv_heads, self.head_dim)
        qk = self.rotary_emb(positions, qk)
        q, k = qk[:, :self.num_heads], qk[:, self.num_heads:]
        v = qkv[:, self.q_size + self.kv_size:].reshape(num_tokens, self.num_kv_heads,
                                                        self.head_dim)
        key_cache, value_cache = kv_cache
        write_to_kv_cache(k, v, key_cache, value_cache, attn_metadata.slot_mapping)
        # Whichever backend the engine selected (mini_vllm.forward_context); numpy by default.
        attn = get_forward_context().attn_backend(q, key_cache, value_cache, attn_metadata,
                                                  self.scaling)
        return linear(self, "o_proj", attn.reshape(num_tokens, self.q_size))

    def _qkv(self, hidden_states: np.ndarray) -> np.ndarray:
        """``[num_tokens, q_size + 2 * kv_size]``: q, k and v side by side, before RoPE. A hook:
        Qwen2's attention adds its q/k/v bias here (``mini_vllm/models/qwen2.py``)."""
        return linear(self, "qkv_proj", hidden_states)


class LlamaDecoderLayer:
    """Pre-norm block: ``h + attn(norm(h))``, then ``h + mlp(norm(h))``; the residual stream is
    carried separately and added inside the next norm, as upstream."""

    #: The attention block's class, built with LlamaAttention's arguments (a hook: Qwen2's layer
    #: swaps in its biased attention).
    attn_cls: type[LlamaAttention] = LlamaAttention

    def __init__(self, config: dict, rotary_emb: RotaryEmbedding, dtype: np.dtype) -> None:
        hidden = config["hidden_size"]
        num_heads = config["num_attention_heads"]
        eps = config.get("rms_norm_eps", 1e-6)
        self.self_attn = self.attn_cls(
            hidden, num_heads, config.get("num_key_value_heads") or num_heads,
            config.get("head_dim") or hidden // num_heads, rotary_emb, dtype)
        self.mlp = self._make_mlp(config, dtype)
        self.input_layernorm = RMSNorm(hidden, eps, dtype)
        self.post_attention_layernorm = RMSNorm(hidden, eps, dtype)

    def __call__(self, positions: np.ndarray, hidden_states: np.ndarray,
                 residual: np.ndarray | None, kv_cache: tuple[np.ndarray, np.ndarray],
                 attn_metadata: AttentionMetadata) -> tuple[np.ndarray, np.ndarray]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions, hidden_states, kv_cache, attn_metadata)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        return self.mlp(hidden_states), residual

    def _make_mlp(self, config: dict, dtype: np.dtype) -> LlamaMLP:
        # A hook: Mixtral's layer returns its mixture of experts here.
        return LlamaMLP(config["hidden_size"], config["intermediate_size"], dtype)

    def named_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{prefix}.self_attn.qkv_proj.weight", self.self_attn.qkv_proj
        yield f"{prefix}.self_attn.o_proj.weight", self.self_attn.o_proj
        yield from self._mlp_parameters(prefix)
        yield f"{prefix}.input_layernorm.weight", self.input_layernorm.weight
        yield f"{prefix}.post_attention_layernorm.weight", self.post_attention_layernorm.weight

    def _mlp_parameters(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{prefix}.mlp.gate_up_proj.weight", self.mlp.gate_up_proj
        yield f"{prefix}.mlp.down_proj.weight", self.mlp.down_proj


class LlamaModel:
    """Embedding, the decoder layers, the final norm: token ids to last hidden states."""

    layer_cls: type[LlamaDecoderLayer] = LlamaDecoderLayer  # Mixtral's model swaps its own in

    def __init__(self, config: dict, dtype: np.dtype) -> None:
        hidden = config["hidden_size"]
        num_heads = config["num_attention_heads"]
        rotary_emb = RotaryEmbedding(config.get("head_dim") or hidden // num_heads,
                                     config.get("max_position_embeddings", 2048),
                                     _rope_theta(config), dtype)
        self.embed_tokens = np.zeros((config["vocab_size"], hidden), dtype)
        self.layers = [self.layer_cls(config, rotary_emb, dtype)
                       for _ in range(config["num_hidden_layers"])]
        self.norm = RMSNorm(hidden, config.get("rms_norm_eps", 1e-6), dtype)

    def __call__(self, input_ids: np.ndarray, positions: np.ndarray,
                 kv_caches: list[tuple[np.ndarray, np.ndarray]],
                 attn_metadata: AttentionMetadata,
                 mm_embeds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        hidden_states = self.embed_tokens[input_ids]  # a fresh array: the residual adds in place
        if mm_embeds is not None:  # images (phase 13): their embeddings replace these rows
            from mini_vllm.multimodal.encoder import merge_multimodal_embeddings

            is_multimodal, embeds = mm_embeds
            merge_multimodal_embeddings(hidden_states, is_multimodal, embeds)
        residual = None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden_states, residual = layer(positions, hidden_states, residual, kv_cache,
                                            attn_metadata)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states

    def named_parameters(self, prefix: str = "model") -> Iterator[tuple[str, np.ndarray]]:
        yield f"{prefix}.embed_tokens.weight", self.embed_tokens
        for i, layer in enumerate(self.layers):
            yield from layer.named_parameters(f"{prefix}.layers.{i}")
        yield f"{prefix}.norm.weight", self.norm.weight


class LlamaForCausalLM:
    """The Llama language model: ``forward`` to hidden states, ``compute_logits`` to vocab scores.

    ``config`` is a Hugging Face ``config.json`` as a dict; ``dtype`` is float32 or float64.
    Parameters start at zero until ``load_weights`` fills them.
    """

    #: Fused parameter -> the checkpoint tensors stacked into it (upstream's attribute); the
    #: loader maps parameters back to the checkpoint names they need with it.
    packed_modules_mapping = {
        "qkv_proj": ["q_proj", "k_proj", "v_proj"],
        "gate_up_proj": ["gate_proj", "up_proj"],
    }
    model_cls: type[LlamaModel] = LlamaModel  # the stack __init__ builds (Mixtral: its own)

    def __init__(self, config: dict, dtype: np.dtype | str = np.float32) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        if self.dtype not in _SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if config.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (only silu)")
        self._check_config(config)
        try:
            self.model = self.model_cls(config, self.dtype)
        except KeyError as exc:
            arch = type(self).__name__.removesuffix("ForCausalLM")
            raise ValueError(f"config lacks {exc.args[0]!r}, which a {arch} needs") from None
        attn = self.model.layers[0].self_attn if self.model.layers else None
        if attn is None or attn.num_heads % attn.num_kv_heads:
            raise ValueError("config needs num_hidden_layers >= 1 and num_attention_heads a "
                             "multiple of num_key_value_heads")
        self.num_layers = len(self.model.layers)
        self.num_kv_heads = attn.num_kv_heads
        self.head_dim = attn.head_dim
        self.hidden_size = config["hidden_size"]
        self.vocab_size = config["vocab_size"]
        self.max_model_len = len(attn.rotary_emb.cos_sin_cache)
        self.tie_word_embeddings = bool(config.get("tie_word_embeddings", False))
        self.lm_head = np.zeros((self.hidden_size, self.vocab_size), self.dtype)
        # Rows of each shard inside a fused checkpoint-layout weight ([out, in]).
        q, kv = attn.q_size, attn.kv_size
        self._shards = {
            "qkv_proj": {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)},
            **self._mlp_shards(),
        }

    def _check_config(self, config: dict) -> None:
        """Refuse what this architecture does not run (a hook: Mixtral checks its experts)."""
        for key in ("attention_bias", "mlp_bias"):
            if config.get(key):
                raise ValueError(f"{key}=true is not supported (Llama projections have no bias)")

    def _mlp_shards(self) -> dict[str, dict]:
        inter = self.model.layers[0].mlp.intermediate_size
        return {"gate_up_proj": {0: slice(0, inter), 1: slice(inter, 2 * inter)}}

    def forward(self, input_ids: np.ndarray, positions: np.ndarray,
                kv_caches: list[tuple[np.ndarray, np.ndarray]],
                attn_metadata: AttentionMetadata,
                mm_embeds: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """``[num_tokens]`` ids and positions -> ``[num_tokens, hidden_size]`` hidden states.

        ``mm_embeds`` (images, phase 13; passed only when a step has image positions):
        ``(is_multimodal, embeds)``, a ``[num_tokens]`` bool mask and ``[mask.sum(),
        hidden_size]`` rows that replace those tokens' input embeddings, in order (upstream's
        ``inputs_embeds`` after ``merge_multimodal_embeddings``).
        """
        if positions.size and int(positions.max()) >= self.max_model_len:
            raise ValueError(f"position {int(positions.max())} is past the model's "
                             f"max_position_embeddings ({self.max_model_len})")
        if mm_embeds is None:
            return self.model(input_ids, positions, kv_caches, attn_metadata)
        return self.model(input_ids, positions, kv_caches, attn_metadata, mm_embeds)

    def compute_logits(self, hidden_states: np.ndarray) -> np.ndarray:
        """``[rows, hidden_size]`` -> ``[rows, vocab_size]`` logits in the model's dtype."""
        return hidden_states @ self.lm_head

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        yield from self.model.named_parameters("model")
        if not self.tie_word_embeddings:
            yield "lm_head.weight", self.lm_head

    def load_weights(self, weights: Iterable[tuple[str, np.ndarray]]) -> set[str]:
        """Copy Hugging Face-named tensors into the parameters; return the names consumed.

        May be called more than once (one call per checkpoint file, say). Raises ``ValueError``
        naming the tensor for an unknown name, a shape that does not fit, or a non-float tensor.
        """
        # (fused parameter, checkpoint tensor, shard), as upstream's stacked_params_mapping.
        stacked_params_mapping = [
            (".qkv_proj", ".q_proj", "q"),
            (".qkv_proj", ".k_proj", "k"),
            (".qkv_proj", ".v_proj", "v"),
            (".gate_up_proj", ".gate_proj", 0),
            (".gate_up_proj", ".up_proj", 1),
        ]
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue  # recomputed from the config
            if self.tie_word_embeddings and name == "lm_head.weight":
                continue  # some tied checkpoints store the head anyway; the embedding is it
            if not np.issubdtype(tensor.dtype, np.floating):
                raise ValueError(f"{name}: expected a floating-point tensor, got {tensor.dtype}")
            for param_name, weight_name, shard_id in stacked_params_mapping:
                if weight_name in name:
                    fused = name.replace(weight_name, param_name)
                    if fused not in params:
                        raise ValueError(f"unknown tensor {name!r}: not a Llama weight")
                    rows = self._shards[param_name[1:]][shard_id]
                    # params are [in, out]: a shard's rows in checkpoint layout are its columns
                    # (a stacked 1-D bias, as Qwen2's q/k/v biases, takes its slice alike).
                    target = params[fused][..., rows].T
                    break
            else:
                if name not in params:
                    raise ValueError(f"unknown tensor {name!r}: not a Llama weight")
                target = params[name]
                if target.ndim == 2 and name != "model.embed_tokens.weight":
                    target = target.T  # a projection: checkpoint [out, in], ours [in, out]
            if tensor.shape != target.shape:
                raise ValueError(f"{name}: expected shape {target.shape}, got {tensor.shape}")
            target[...] = tensor
            loaded.add(name)
        if self.tie_word_embeddings and "model.embed_tokens.weight" in loaded:
            self.lm_head[...] = self.model.embed_tokens.T
        return loaded

"""Kata 04-02 — the backend selection matrix: which attention kernel an engine will run.

vLLM has one attention op and a stable of kernels for it. At start-up a selector picks one, from
the platform, the dtype, the head size and the model's features, unless you name one yourself.
Write that selector over the small world in ``scaffold.py`` (``Platform`` and the ``BACKENDS``
table): the chain each platform prefers, the check that rules a backend out, and the resolution
order that ties them together.

Names are vLLM's: ``"FLASH_ATTN"``, ``"FLASHINFER"``, ``"TRITON_ATTN"``, ``"FLASHMLA"``,
``"TRITON_MLA"``, ``"CPU_ATTN"``, ``"CPU_MLA"``. Dtypes are ``"float16"``, ``"bfloat16"``,
``"float32"``. A sliding window is ``None`` (full attention) or its length in tokens.
"""

from __future__ import annotations

from katas.phase04.backend_selection.scaffold import (  # noqa: F401
    BACKENDS,
    DTYPES,
    BackendSpec,
    Platform,
)


def default_chain(platform: Platform, is_mla: bool = False) -> list[str]:
    """The platform's ranked candidates for a model, most preferred first, before any filter.

    - ``cuda``: FlashAttention, then FlashInfer, then Triton — except on Blackwell (capability
      major 10), where vLLM ranks FlashInfer ahead of FlashAttention. For an MLA model the
      chain holds only MLA backends: FlashMLA, then Triton MLA.
    - ``cpu``: one backend per KV layout, ``["CPU_ATTN"]`` or, for MLA, ``["CPU_MLA"]``.

    Every chain ends in its portable fallback. The list is new on every call: mutating it
    changes nothing for the next caller.
    """
    raise NotImplementedError("default_chain: the platform's ranked attention backends")


def unsupported_reasons(backend: str, platform: Platform, dtype: str, head_size: int,
                        is_mla: bool = False, sliding_window: int | None = None) -> list[str]:
    """Every reason ``backend`` cannot run this configuration; ``[]`` when it can.

    One short string per failed check against ``BACKENDS[backend]``, each containing the word
    that names it (the tests look for these words, in any case):

    - the platform: the backend ships kernels for another platform (say ``"cpu"`` or
      ``"cuda"``; when the platform is wrong, the capability is not checked);
    - ``"capability"``: the GPU's compute capability is outside the backend's;
    - ``"dtype"``;
    - ``"head size"``;
    - ``"MLA"``: an MLA model needs an MLA backend, and an MLA backend needs an MLA model;
    - ``"sliding window"``: only when a window is asked for and the backend has none.

    ``FLASH_ATTN`` on an H100 for bf16, head size 128 → ``[]``.

    Raises ``ValueError`` for a backend name not in ``BACKENDS`` (naming it), a dtype not in
    ``DTYPES`` (saying "dtype"), a head size that is not a positive int (saying "head_size"),
    or a sliding window that is neither ``None`` nor a positive int (saying "sliding_window").
    """
    raise NotImplementedError("unsupported_reasons: why a backend cannot run a configuration")


def select_backend(platform: Platform, dtype: str, head_size: int, is_mla: bool = False,
                   sliding_window: int | None = None, override: str | None = None) -> str:
    """The name of the attention backend an engine on ``platform`` runs for this model.

    Resolution order:

    1. ``override`` (a name from ``BACKENDS``, any letter case) beats everything, MLA included,
       and comes back in vLLM's spelling (``"triton_attn"`` → ``"TRITON_ATTN"``). It is still
       checked: on ``cuda`` an override the configuration rules out raises ``ValueError``
       carrying its reasons (vLLM never silently swaps a backend you asked for); on ``cpu``,
       as vLLM 0.32 does, an override the CPU cannot honour is ignored and selection goes on.
       An unknown name raises ``ValueError`` on every platform, listing the valid names.
    2. MLA forces the MLA family: an MLA model is only ever given an MLA backend.
    3. The platform's default chain (``default_chain``) ranks the candidates.
    4. The capability filter (``unsupported_reasons``) skips every candidate that cannot run
       the configuration. A sliding window only filters: it never picks a backend by itself.
    5. The first survivor wins; the chain ends in its portable fallback (Triton on cuda), so an
       odd head size or float32 lands there. No survivor at all raises ``ValueError`` that
       carries each candidate's reasons.

    The course's matrix: A100 / L4 / H100 in bf16 → ``"FLASH_ATTN"``; an MLA model on H100 →
    ``"FLASHMLA"``; an override → the override; an unsupported head size → ``"TRITON_ATTN"``;
    the CPU in fp32 → ``"CPU_ATTN"``.

    A pure function: the same inputs give the same answer, whatever was asked before. (vLLM
    selects once, at start-up; that is when it calls this, not a cache inside it.) Invalid
    inputs raise ``ValueError`` as ``unsupported_reasons`` does.
    """
    raise NotImplementedError("select_backend: pick the attention backend, in vLLM's order")

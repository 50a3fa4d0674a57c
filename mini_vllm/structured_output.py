"""Structured outputs: the seam between a request's grammar and the sampler (phase 12).

Upstream twins (vLLM v0.22.1): ``vllm/v1/structured_output/backend_types.py:
StructuredOutputGrammar`` (``accept_tokens`` / ``fill_bitmask`` / ``is_terminated``), driven by
``vllm/v1/structured_output/__init__.py: StructuredOutputManager`` and applied to the logits by
``vllm/v1/structured_output/utils.py: apply_grammar_bitmask``.

Per step, per constrained request: ``matcher.allowed_tokens()`` (a bool row over the vocabulary;
upstream packs the same row into ``vocab_size / 32`` int32 words) -> the logits of every other
token become ``-inf`` -> sample -> ``matcher.accept_token(token)``. Softmax renormalises over what
is left, so an illegal token has probability 0: valid by construction, not by retry.

Engine use: ``LLMEngine.add_request(prompt, params, structured_output=matcher)`` or
``LLMEngine.generate(prompts, params, structured_outputs=matcher | [matcher or None, ...])``;
one matcher per request (it holds that request's state), ``None`` = unconstrained. Matchers in
this repository: :class:`mini_vllm.grammar.RegexMatcher` (regex -> DFA over bytes).

Vocabulary: a grammar speaks characters, a model speaks tokens. :func:`token_bytes` gives every
token id's BYTES (a byte-level BPE token may hold half of a UTF-8 character, or several
characters), and matchers walk those bytes through their automaton.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mini_vllm.tokenizer import ByteTokenizer, bytes_to_unicode


@runtime_checkable
class GrammarMatcher(Protocol):
    """One request's constraint, advanced token by token.

    Upstream twin: ``StructuredOutputGrammar`` (``accept_tokens`` / ``fill_bitmask`` /
    ``is_terminated``).
    """

    def allowed_tokens(self) -> np.ndarray:
        """bool ``[vocab_size]``: the tokens legal next. EOS is legal exactly when the text so
        far is a complete match; a token that spells no bytes (a special token) never is."""
        ...

    def accept_token(self, token_id: int) -> None:
        """Advance by one token; ``ValueError`` if ``token_id`` is not allowed."""
        ...

    def is_terminated(self) -> bool:
        """True once EOS was accepted."""
        ...


# -- the vocabulary as bytes ----------------------------------------------------------------

_TOKEN_BYTES_CACHE: weakref.WeakKeyDictionary[Any, list[bytes]] = weakref.WeakKeyDictionary()


def token_bytes(tokenizer: Any) -> list[bytes]:
    """Each token id's bytes, indexed by id: ``len == tokenizer.vocab_size``.

    * ``ByteTokenizer``: id ``b`` < 256 is ``bytes([b])``; EOS is ``b""``.
    * A byte-level BPE ``HFTokenizer`` (SmolLM2: 49,152 tokens): the token's vocabulary string
      mapped back through GPT-2's byte alphabet (``Ġ`` -> ``b" "``); a token may be part of a
      UTF-8 character (``b"\\xc3"``). Special (added) tokens are ``b""``: they spell no text,
      so no matcher ever allows them, except EOS, which is gated on acceptance instead.

    Cached per tokenizer object (building SmolLM2's list takes a few tenths of a second).
    ``ValueError`` for a tokenizer whose tokens are not byte-level BPE strings.
    """
    try:
        return _TOKEN_BYTES_CACHE[tokenizer]
    except (KeyError, TypeError):
        pass
    result = _build_token_bytes(tokenizer)
    try:
        _TOKEN_BYTES_CACHE[tokenizer] = result
    except TypeError:  # not weak-referenceable: no cache
        pass
    return result


def _build_token_bytes(tokenizer: Any) -> list[bytes]:
    if isinstance(tokenizer, ByteTokenizer):
        return [bytes([i]) if i < 256 else b"" for i in range(tokenizer.vocab_size)]
    inner = getattr(tokenizer, "_tokenizer", None)
    if inner is None:
        raise ValueError(f"token_bytes needs a ByteTokenizer or an HFTokenizer, got {tokenizer!r}")
    decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    special = set(inner.get_added_tokens_decoder())
    out: list[bytes] = []
    for token_id in range(tokenizer.vocab_size):
        text = inner.id_to_token(token_id)
        if token_id in special or text is None:
            out.append(b"")
            continue
        try:
            out.append(bytes(decoder[ch] for ch in text))
        except KeyError as exc:
            raise ValueError(
                f"token {token_id} ({text!r}) is not a byte-level BPE token: character "
                f"{exc.args[0]!r} is outside GPT-2's byte alphabet") from None
    return out


# -- engine glue ----------------------------------------------------------------------------


def check_matcher(matcher: object, where: str) -> GrammarMatcher | None:
    """``matcher`` if it implements :class:`GrammarMatcher` (or ``None``); ``ValueError`` naming
    ``where`` otherwise."""
    if matcher is None:
        return None
    missing = [name for name in ("allowed_tokens", "accept_token", "is_terminated")
               if not callable(getattr(matcher, name, None))]
    if missing:
        raise ValueError(f"{where} must be a GrammarMatcher (allowed_tokens / accept_token / "
                         f"is_terminated) or None, got {matcher!r} (missing {', '.join(missing)})")
    return matcher  # type: ignore[return-value]


def allowed_mask(matcher: GrammarMatcher, vocab_size: int, request_id: str) -> np.ndarray:
    """The matcher's next-token row, checked: bool ``[vocab_size]`` with at least one True.

    ``RuntimeError`` naming the request for a wrong shape or an all-False row (a dead end: the
    grammar left the request nothing to emit, not even EOS).
    """
    mask = np.asarray(matcher.allowed_tokens())
    if mask.dtype != np.bool_ or mask.shape != (vocab_size,):
        raise RuntimeError(f"request {request_id!r}: its structured-output matcher returned a "
                           f"{mask.dtype} mask of shape {mask.shape}; expected bool "
                           f"({vocab_size},)")
    if not mask.any():
        raise RuntimeError(f"request {request_id!r}: structured output reached a dead end: its "
                           f"matcher allows no token (not even EOS) after "
                           f"{'terminating' if matcher.is_terminated() else 'this output'}")
    return mask


def normalize_structured_outputs(structured_outputs: object, num_prompts: int) -> list[Any]:
    """``generate``'s ``structured_outputs`` as one entry per prompt (``ValueError`` otherwise).

    A single matcher is accepted only for a single prompt: it holds one request's state.
    """
    if structured_outputs is None:
        return [None] * num_prompts
    if isinstance(structured_outputs, (list, tuple)):
        items = list(structured_outputs)
        if len(items) != num_prompts:
            raise ValueError(f"got {len(items)} structured outputs for {num_prompts} prompts")
    else:
        if num_prompts != 1:
            raise ValueError("one structured-output matcher holds one request's state: pass a "
                             f"list with one matcher (or None) per prompt for {num_prompts} "
                             "prompts")
        items = [structured_outputs]
    checked = [check_matcher(m, f"structured_outputs[{i}]") for i, m in enumerate(items)]
    seen: set[int] = set()
    for i, m in enumerate(checked):
        if m is not None:
            if id(m) in seen:
                raise ValueError(f"structured_outputs[{i}] is the same matcher object as an "
                                 "earlier prompt's: each request needs its own")
            seen.add(id(m))
    return checked

"""Kata 11-02 — serve a base model and several LoRA adapters in one batch, and prove that every
request got the behaviour it asked for.

Fill in the bodies; grade them with ``pytest --impl=mine katas/phase11/serve_many_loras`` (the
live tests need vLLM: ``pytest -m live --impl=mine katas/phase11/serve_many_loras``).

``llm`` below is anything with vLLM's ``LLM.generate(prompts, sampling_params, *,
lora_request=..., use_tqdm=...)``: it returns one output per prompt, in the order given, each with
``.outputs[0].token_ids``. ``lora_request`` may be a list with one entry per prompt (a
``LoRARequest``, or None for the base model). ``Job``, ``Verdict`` and ``UNMATCHED`` come from
``scaffold.py``. A "tag" is an adapter name, or None for the base model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from katas.phase11.serve_many_loras.scaffold import (  # noqa: F401 - yours to use
    UNMATCHED,
    Job,
    Verdict,
    vllm_lora_request_class,
)

SoloRuns = dict[tuple[str, str | None], tuple[int, ...]]


def make_lora_requests(adapter_dirs: Mapping[str, str | os.PathLike[str]],
                       request_cls: Callable[..., Any] | None = None) -> dict[str, Any]:
    """One request object per adapter: ``{name: request_cls(name, lora_int_id, path)}``.

    ``adapter_dirs`` maps adapter names (non-empty strings) to their peft directories.
    ``request_cls`` is built like vLLM's ``LoRARequest(lora_name, lora_int_id, lora_path)`` and
    defaults to it (``vllm_lora_request_class()``). Each adapter gets its own integer id, valid
    for vLLM (which keys its adapter cache by id); the path is passed as a string. Keys keep the
    mapping's order. A name that is not a non-empty string raises ``ValueError``.
    """
    raise NotImplementedError("make_lora_requests: one LoRARequest per adapter")


def batch_arguments(jobs: Sequence[Job],
                    lora_requests: Mapping[str, Any]) -> tuple[list[str], list[Any | None]]:
    """The ``prompts`` and ``lora_request`` lists of ONE generate call serving all ``jobs``.

    Entry ``i`` of the engine's answer must belong to ``jobs[i]``. A base job's entry is None;
    an adapter job's is its request from ``lora_requests``. A job naming an adapter that
    ``lora_requests`` lacks raises ``ValueError`` naming it.
    """
    raise NotImplementedError("batch_arguments: the prompt and lora_request lists of a batch")


def collect_tokens(outputs: Sequence[Any]) -> list[tuple[int, ...]]:
    """The generated token ids of each output, in order, as tuples.

    Each output must hold exactly one completion (``n=1``); otherwise ``ValueError``.
    """
    raise NotImplementedError("collect_tokens: each request's generated token ids")


def run_alone(llm: Any, jobs: Sequence[Job], lora_requests: Mapping[str, Any],
              params: Any) -> SoloRuns:
    """The reference runs: ``{(prompt, tag): tokens}`` for every distinct prompt of ``jobs``
    under base (tag None) and under every adapter of ``lora_requests``, whichever tag the jobs
    asked for, each produced by a generate call holding that one request alone."""
    raise NotImplementedError("run_alone: each prompt under each tag, one request per call")


def run_batch(llm: Any, jobs: Sequence[Job], lora_requests: Mapping[str, Any],
              params: Any) -> list[tuple[int, ...]]:
    """Serve all ``jobs`` in one generate call; return each job's tokens, in job order."""
    raise NotImplementedError("run_batch: every job in one generate call")


def check_batch(jobs: Sequence[Job], batch_tokens: Sequence[Sequence[int]],
                solo_runs: Mapping[tuple[str, str | None], Sequence[int]]) -> list[Verdict]:
    """One ``Verdict`` per job, in order: whose behaviour did the batch give it?

    ``batch_tokens[i]`` is what ``jobs[i]`` produced in the batch. ``served_as`` is the tag
    whose solo run of the same prompt produced exactly those tokens, or ``UNMATCHED`` when no
    solo run did. Refused with ``ValueError``:

    - ``batch_tokens`` and ``jobs`` of different lengths (message names the jobs);
    - a job whose own ``(prompt, tag)`` has no solo run (message says "no solo run");
    - solo runs of a job's prompt that are ``identical`` under two tags (message says so):
      they could not tell those tags apart.
    """
    raise NotImplementedError("check_batch: which tag each batched request was served as")

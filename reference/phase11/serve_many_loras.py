"""Reference for kata 11-02: serve a base model and several LoRA adapters in one batch, and check
that every request got the behaviour it asked for."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from katas.phase11.serve_many_loras.scaffold import (
    UNMATCHED,
    Job,
    Verdict,
    vllm_lora_request_class,
)

SoloRuns = dict[tuple[str, str | None], tuple[int, ...]]


def make_lora_requests(adapter_dirs: Mapping[str, str | os.PathLike[str]],
                       request_cls: Callable[..., Any] | None = None) -> dict[str, Any]:
    cls = request_cls if request_cls is not None else vllm_lora_request_class()
    requests: dict[str, Any] = {}
    # Id 0 means "no adapter" upstream: adapters are numbered from 1, one id per adapter.
    for lora_int_id, (name, path) in enumerate(adapter_dirs.items(), start=1):
        if not isinstance(name, str) or not name:
            raise ValueError(f"adapter names must be non-empty strings, got {name!r}")
        requests[name] = cls(name, lora_int_id, os.fspath(path))
    return requests


def batch_arguments(jobs: Sequence[Job],
                    lora_requests: Mapping[str, Any]) -> tuple[list[str], list[Any | None]]:
    prompts: list[str] = []
    loras: list[Any | None] = []
    for job in jobs:  # the engine answers in this order: keep it
        if job.adapter is not None and job.adapter not in lora_requests:
            raise ValueError(f"job asks for adapter {job.adapter!r}, which is not among the "
                             f"lora_requests {sorted(lora_requests)}")
        prompts.append(job.prompt)
        loras.append(None if job.adapter is None else lora_requests[job.adapter])
    return prompts, loras


def collect_tokens(outputs: Sequence[Any]) -> list[tuple[int, ...]]:
    tokens = []
    for i, output in enumerate(outputs):
        if len(output.outputs) != 1:
            raise ValueError(f"output {i} holds {len(output.outputs)} completions; one request, "
                             f"one completion (n=1) expected")
        tokens.append(tuple(output.outputs[0].token_ids))
    return tokens


def run_alone(llm: Any, jobs: Sequence[Job], lora_requests: Mapping[str, Any],
              params: Any) -> SoloRuns:
    prompts = list(dict.fromkeys(job.prompt for job in jobs))
    tags: list[str | None] = [None, *lora_requests]
    runs: SoloRuns = {}
    for prompt in prompts:
        for tag in tags:  # every tag, not only the requested ones: a mix-up must be nameable
            lora = None if tag is None else lora_requests[tag]
            outputs = llm.generate([prompt], params, lora_request=[lora], use_tqdm=False)
            (runs[(prompt, tag)],) = collect_tokens(outputs)
    return runs


def run_batch(llm: Any, jobs: Sequence[Job], lora_requests: Mapping[str, Any],
              params: Any) -> list[tuple[int, ...]]:
    prompts, loras = batch_arguments(jobs, lora_requests)
    outputs = llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    return collect_tokens(outputs)


def check_batch(jobs: Sequence[Job], batch_tokens: Sequence[Sequence[int]],
                solo_runs: Mapping[tuple[str, str | None], Sequence[int]]) -> list[Verdict]:
    if len(batch_tokens) != len(jobs):
        raise ValueError(f"{len(batch_tokens)} batch outputs for {len(jobs)} jobs: every job "
                         f"needs exactly one")
    verdicts = []
    for index, (job, got) in enumerate(zip(jobs, batch_tokens, strict=True)):
        if (job.prompt, job.adapter) not in solo_runs:
            raise ValueError(f"no solo run for job {index} ({job.prompt!r} with adapter "
                             f"{job.adapter!r}): nothing to compare it with")
        candidates = {tag: tuple(tokens) for (prompt, tag), tokens in solo_runs.items()
                      if prompt == job.prompt}
        seen: dict[tuple[int, ...], str | None] = {}
        for tag, tokens in candidates.items():
            if tokens in seen:
                raise ValueError(f"the solo runs of {job.prompt!r} under {seen[tokens]!r} and "
                                 f"{tag!r} are identical: they cannot tell the two apart")
            seen[tokens] = tag
        got = tuple(got)
        served_as = seen.get(got, UNMATCHED)
        verdicts.append(Verdict(index=index, prompt=job.prompt, requested=job.adapter,
                                served_as=served_as, tokens=got))
    return verdicts

"""Reference for kata 01-03 — one engine iteration, wired by hand from the engine's organs."""

from __future__ import annotations

from mini_vllm import Request, Sampler, Scheduler, ToyModel


def engine_step(scheduler: Scheduler, model: ToyModel, sampler: Sampler) -> list[Request]:
    """Run one engine iteration over the given organs; return the requests that finished in it."""
    # 1. schedule: who computes how many tokens this step.
    output = scheduler.schedule()
    if not output.scheduled_requests:
        return []  # idle: no forward pass, nothing to update

    # 2. execute: one row per scheduled request, in the scheduler's row order. The toy model
    # needs only the last token a row computes and that token's position; a real model runner
    # feeds all n tokens and gathers logits at the same last position (logits_indices).
    rows = output.scheduled_requests
    counts = [output.num_scheduled_tokens[request.request_id] for request in rows]
    positions = [r.num_computed_tokens + n - 1 for r, n in zip(rows, counts, strict=True)]
    last_tokens = [r.all_token_ids[p] for r, p in zip(rows, positions, strict=True)]
    logits = model.forward(last_tokens, positions)

    # 3. sample: only rows that catch up with num_tokens have read the whole context.
    sampled: dict[str, int] = {}
    for row, (request, n) in enumerate(zip(rows, counts, strict=True)):
        if Scheduler.needs_sample(request, n):
            sampled[request.request_id] = sampler.sample(logits[row], request.sampling_params)

    # 4. update, unconditionally: a mid-prefill chunk still advances num_computed_tokens.
    return scheduler.update_from_output(output, sampled)

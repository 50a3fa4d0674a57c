"""Kata 01-03 — rebuild one engine step by hand: schedule, execute, sample, update."""

from __future__ import annotations

from mini_vllm import Request, Sampler, Scheduler, ToyModel


def engine_step(scheduler: Scheduler, model: ToyModel, sampler: Sampler) -> list[Request]:
    """Run one engine iteration over the given organs; return the requests that finished in it.

    Recipe, four stages in this order:

    1. **schedule** — ``output = scheduler.schedule()``. ``output.scheduled_requests`` lists
       the requests of this step in row order; ``output.num_scheduled_tokens[request_id]`` is
       how many tokens (``n``) each computes. Nothing scheduled: return ``[]`` and touch
       nothing else — no forward pass, no sampling.
    2. **execute** — one ``model.forward(last_tokens, positions)`` for the whole batch, one
       row per scheduled request in ``scheduled_requests`` order. A row's input is the request's
       last scheduled token, at position ``p = request.num_computed_tokens + n - 1``, read as
       ``request.all_token_ids[p]``. Logits row ``i`` belongs to scheduled request ``i``.
    3. **sample** — only for the rows where ``Scheduler.needs_sample(request, n)`` holds (the
       step computes the request's last known token): ``sampled[request.request_id] =
       sampler.sample(logits[i], request.sampling_params)``. A mid-prefill chunk samples nothing.
    4. **update** — ``return scheduler.update_from_output(output, sampled)``, on every non-empty
       step, even when ``sampled`` is empty: it advances ``num_computed_tokens`` by ``n``,
       appends the sampled tokens, and reaps (and returns) the finished requests.
    """
    raise NotImplementedError(
        "engine_step: schedule -> forward(last tokens, positions) -> sample -> update_from_output"
    )

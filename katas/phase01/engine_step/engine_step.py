"""Kata 01-03 — rebuild one engine step by hand: schedule, execute, sample, update."""

from __future__ import annotations

from mini_vllm import Request, Sampler, Scheduler, ToyModel


def engine_step(scheduler: Scheduler, model: ToyModel, sampler: Sampler) -> list[Request]:
    """Run one engine iteration over the given organs; return the requests that finished in it.

    One tick is four stages, in this order — schedule, execute, sample, update — and the
    result must be indistinguishable from ``LLMEngine.step``: same tokens, same counters, same
    finished list, every step. The contract of each stage:

    - **schedule**: ``scheduler.schedule()`` decides the step. Its ``scheduled_requests``
      are the batch's rows, in order; ``num_scheduled_tokens[request_id]`` (``n``) is how many
      tokens each computes. An empty schedule is an idle step: return ``[]`` and touch nothing
      else — no forward pass, no sampling.
    - **execute**: exactly one ``model.forward(last_tokens, positions)`` per step, for the
      whole batch. Row ``i`` is scheduled request ``i``; its input is the *last* token that
      request computes this step, with that token's position (its index in
      ``request.all_token_ids``). Logits row ``i`` belongs to request ``i``.
    - **sample**: a row yields a token only if its request catches up this step
      (``Scheduler.needs_sample(request, n)``), through ``sampler.sample(logits row, that
      request's own sampling_params)``. A mid-prefill chunk samples nothing.
    - **update**: ``scheduler.update_from_output(output, sampled)`` with
      ``sampled = {request_id: token}``, on every non-empty step — even when nothing was
      sampled (a prefill chunk still has to advance ``num_computed_tokens``). It appends the
      tokens, applies the stop conditions, frees finished requests' KV and returns them: that
      list is this function's result.
    """
    raise NotImplementedError(
        "engine_step: one engine tick - schedule, execute, sample, update"
    )

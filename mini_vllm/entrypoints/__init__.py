"""Network front ends of mini_vllm (upstream: ``vllm/entrypoints/``).

``openai_server``: the OpenAI-compatible chat subset over HTTP (needs the ``serve`` extra).
"""

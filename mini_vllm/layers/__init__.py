"""Layers shared by mini_vllm's model architectures (upstream: ``vllm/model_executor/layers``)."""

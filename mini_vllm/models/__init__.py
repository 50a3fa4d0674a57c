"""Real models for mini_vllm: numpy architectures, their registry, and checkpoint loading."""

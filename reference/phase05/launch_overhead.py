"""Reference for kata 05-02: the launch-count economics of CUDA graphs, in closed form.

``k`` calls of a ``num_ops``-op model: eager pays ``k * num_ops`` launches; a graph pays
``capture_cost_ops`` (default ``num_ops``) for the first call and 1 for each later one.
"""

from __future__ import annotations


def _check(num_ops: int, k: int | None = None, capture_cost_ops: int | None = None,
           *, min_k: int = 0) -> int:
    """Validate the arguments; return the capture cost to use."""
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(num_ops) or num_ops < 1:
        raise ValueError(f"num_ops must be an int >= 1, got {num_ops!r}")
    if k is not None and (not is_int(k) or k < min_k):
        raise ValueError(f"k (the number of calls) must be an int >= {min_k}, got {k!r}")
    if capture_cost_ops is None:
        return num_ops
    if not is_int(capture_cost_ops) or capture_cost_ops < num_ops:
        raise ValueError(
            f"capture_cost_ops must be an int >= num_ops ({num_ops}): a capture runs every op "
            f"at least once; got {capture_cost_ops!r}")
    return capture_cost_ops


def eager_launches(num_ops: int, k: int) -> int:
    """Launches of ``k`` eager calls: every op, every call."""
    _check(num_ops, k)
    return k * num_ops


def graph_launches(num_ops: int, k: int, capture_cost_ops: int | None = None) -> int:
    """Launches of ``k`` calls through one graph: the capture, then one per replay."""
    capture_cost = _check(num_ops, k, capture_cost_ops)
    if k == 0:
        return 0  # never called: nothing captured either
    return capture_cost + (k - 1)


def crossover(num_ops: int, capture_cost_ops: int | None = None) -> int | None:
    """The first call count at which the graph's total is strictly below eager's; ``None`` if
    it never is (one op: a replay costs what the op costs)."""
    capture_cost = _check(num_ops, None, capture_cost_ops)
    if num_ops == 1:
        return None
    # C + k - 1 < k * n  <=>  k * (n - 1) > C - 1  <=>  k > (C - 1) / (n - 1)
    return (capture_cost - 1) // (num_ops - 1) + 1


def launch_speedup(num_ops: int, k: int, capture_cost_ops: int | None = None) -> float:
    """Eager launches over graph launches after ``k >= 1`` calls."""
    _check(num_ops, k, capture_cost_ops, min_k=1)
    return eager_launches(num_ops, k) / graph_launches(num_ops, k, capture_cost_ops)


def asymptotic_speedup(num_ops: int, capture_cost_ops: int | None = None) -> float:
    """The limit of :func:`launch_speedup` as the calls go to infinity."""
    _check(num_ops, None, capture_cost_ops)
    # k * n / (C + k - 1) -> n: the capture is paid once, whatever it costs.
    return float(num_ops)

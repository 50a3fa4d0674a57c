"""``--katas-report`` output validates against ``report.schema.json`` (shipped with the package)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest

from tests.kata_builder import write_kata

jsonschema = pytest.importorskip("jsonschema")

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

ROOT = Path(__file__).resolve().parents[1]


def schema() -> dict:
    text = resources.files("pytest_vllm_katas").joinpath("report.schema.json").read_text()
    return json.loads(text)


def validate(document: dict) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_report_with_every_verdict_validates(pytester: pytest.Pytester) -> None:
    write_kata(pytester, "alpha", lab="00-01", order=1, stub="def add(a, b):\n    return a + b\n",
               tests="import pytest\npytestmark = pytest.mark.cpu_ok\n"
                     "def test_adds(impl):\n    assert impl.add(1, 2) == 3\n"
                     "def test_speed(kata_bench):\n    kata_bench(lambda m: m.add(1, 2))\n")
    write_kata(pytester, "beta", lab="00-02", order=2)
    write_kata(pytester, "gamma", lab="00-03", order=3, stub="def add(a, b):\n    return 0\n")
    write_kata(pytester, "delta", lab="00-04", order=4, tier="gpu_req")
    write_kata(pytester, "epsilon", lab="00-05", order=5, stub="def add(a, b)\n")
    pytester._monkeypatch.setenv("KATAS_CUDA", "0")
    pytester._monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # timing stays on
    pytester.runpytest_subprocess("--impl=mine", "--benchmark-max-time=0.02",
                                  "--katas-report=out/r.json", "katas")
    document = json.loads((pytester.path / "out/r.json").read_text())
    validate(document)
    assert {k["slug"]: k["status"] for k in document["katas"]} == {
        "alpha": "passed", "beta": "todo", "gamma": "failing", "delta": "blocked",
        "epsilon": "error"}
    assert document["katas"][0]["speed"]["ratio"] > 0


def test_report_of_a_real_kata_validates(tmp_path: Path) -> None:
    import subprocess
    import sys

    report = tmp_path / "r.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    subprocess.run([sys.executable, "-m", "pytest", "katas/phase00/sampling_basics", "-q",
                    "-p", "no:cacheprovider", "--benchmark-max-time=0.05",
                    f"--katas-report={report}"],
                   cwd=ROOT, env=env, capture_output=True, timeout=300, check=False)
    document = json.loads(report.read_text())
    validate(document)
    kata = document["katas"][0]
    # A speed verdict only for a kata whose every test passed (run whole, not -k).
    assert kata["status"] == "passed" and kata["speed"] is not None, kata["reason"]


def test_schema_is_package_data() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "report.schema.json" in pyproject, "ship the schema with the package"

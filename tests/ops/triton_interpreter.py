"""Run a Triton backend in Triton's CPU interpreter, which must be on before Triton is imported: a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import cleanpose


def run_in_triton_interpreter(script: str, cases: list) -> list:
    """Run ``script`` with ``TRITON_INTERPRET=1``; it reads ``cases`` as JSON on stdin and prints JSON results."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(Path(cleanpose.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True, env=env,
        timeout=300, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)

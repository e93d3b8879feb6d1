"""The quick commands stay quick: `cleanpose --help`, `evaluate` and `compare` never import torch (nor cv2 or
trimesh); checked in a fresh interpreter's sys.modules after running them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from cleanpose.metrics import evaluate_results, save_results_npz, write_report
from tests.metrics.result_builders import build_result_set

HEAVY = ("torch", "cv2", "trimesh", "torchvision", "timm")
SCRIPT = """
import json, sys
from cleanpose.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
loaded = {"help": [name for name in HEAVY if name in sys.modules]}
assert main(["--quiet", "evaluate", "--results", RESULTS, "--out", OUT + "/eval"]) == 0
loaded["evaluate"] = [name for name in HEAVY if name in sys.modules]
assert main(["--quiet", "compare", RUN_A, RUN_B, "--bootstrap", "2", "--out", OUT + "/cmp"]) == 0
loaded["compare"] = [name for name in HEAVY if name in sys.modules]
print(json.dumps(loaded))
"""


def test_help_evaluate_and_compare_do_not_import_torch(tmp_path):
    results = build_result_set(np.random.default_rng(5), 6, "nocs")
    for name in ("a", "b"):
        write_report(evaluate_results(results, "nocs"), tmp_path / name)
        save_results_npz(results, tmp_path / name / "results.npz")
    constants = (
        f"HEAVY = {HEAVY!r}; RESULTS = {str(tmp_path / 'a' / 'results.npz')!r}; OUT = {str(tmp_path)!r}; "
        f"RUN_A = {str(tmp_path / 'a')!r}; RUN_B = {str(tmp_path / 'b')!r}"
    )
    source = Path(__file__).resolve().parents[1] / "src"
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", constants + "\n" + SCRIPT], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"help": [], "evaluate": [], "compare": []}
    assert (tmp_path / "eval" / "metrics.json").is_file() and (tmp_path / "cmp" / "compare.csv").is_file()

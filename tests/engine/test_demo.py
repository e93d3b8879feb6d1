"""`cleanpose demo --quick`: the whole chain on tiny sizes; its report equals a fresh evaluation."""

import json
import pickle
from pathlib import Path

import pytest

from cleanpose.engine.demo import run_demo
from cleanpose.errors import OutputError
from cleanpose.metrics import evaluate_results, metrics_to_json

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo-cpu.yaml"


def test_quick_demo_chain(tmp_path):
    out = tmp_path / "demo"
    metrics = run_demo(out, CONFIG, quick=True, quiet=True)
    results = [pickle.loads(path.read_bytes()) for path in sorted((out / "test" / "results").rglob("*.pkl"))]
    assert results and all("pred_RTs" in result for result in results)
    written = json.loads((out / "test" / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics_to_json(evaluate_results(results, "nocs"))))
    assert written == json.loads(json.dumps(metrics_to_json(metrics)))
    assert (out / "train" / "loss_curve.png").exists() and any((out / "pictures").glob("*.png"))

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not a cleanpose demo folder"):
        run_demo(tmp_path / "other", CONFIG, quick=True, quiet=True)

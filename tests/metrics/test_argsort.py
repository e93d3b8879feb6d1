"""cleanpose.metrics.argsort: the port of NumPy's generic introsort argsort.

Oracles: an order derived by hand, sort properties, and NumPy 1.26.4 itself (its generic sort, with the
AVX-512 sorts disabled) in a throwaway virtual environment; that test is skipped when pip cannot build it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import venv
from unittest import mock

import numpy as np
import pytest

import cleanpose.metrics.argsort as argsort_module
from cleanpose.metrics.argsort import ascending_order, descending_order, introsort_argsort, reference_argsort

DISABLE_AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"


def test_seventeen_equal_values_by_hand():
    # One partition of [0, 16] (pivot slot 8 swapped to 15; the scans stop at every equal value and swap
    # 1↔14 … 7↔8; the pivot returns to 8), then insertion sorts (stable) of [9, 16] and [0, 7].
    expected = [0, 14, 13, 12, 11, 10, 9, 15, 8, 6, 5, 4, 3, 2, 1, 7, 16]
    for dtype in (np.float32, np.float64, np.int64):
        assert introsort_argsort(np.full(17, 3, dtype=dtype)).tolist() == expected
        assert reference_argsort(np.full(17, 3, dtype=dtype)).tolist() == expected
    assert descending_order(np.full(17, 0.8)).tolist() == expected[::-1]
    assert descending_order(np.full(17, 0.8), "stable").tolist() == list(range(16, -1, -1))


def test_up_to_sixteen_elements_is_stable():
    rng = np.random.default_rng(0)
    for length in range(17):
        values = rng.integers(0, 3, length).astype(np.float64)
        np.testing.assert_array_equal(introsort_argsort(values), np.argsort(values, kind="stable"))


def _tie_heavy_arrays(rng: np.random.Generator, count: int, max_length: int):
    for _ in range(count):
        length = int(rng.integers(1, max_length + 1))
        kind = rng.integers(4)
        if kind == 0:
            values = np.full(length, 0.8)
        elif kind == 1:
            values = rng.choice([0.8, 0.5], size=length)
        elif kind == 2:
            values = rng.integers(0, 6, length) / 5
        else:
            values = rng.integers(0, 3, length).astype(np.float64)
            values[rng.random(length) < 0.3] = np.nan
            values[rng.random(length) < 0.1] = -0.0
        yield values.astype(np.float32 if rng.random() < 0.5 else np.float64)


def test_properties_on_tie_heavy_arrays():
    rng = np.random.default_rng(1)
    for values in _tie_heavy_arrays(rng, 300, 300):
        order = introsort_argsort(values)
        assert sorted(order.tolist()) == list(range(len(values)))  # a permutation
        ranked = values[order]
        finite = ranked[~np.isnan(ranked)]
        assert np.all(finite[1:] >= finite[:-1]) and np.isnan(ranked[len(finite) :]).all()  # sorted, NaN last
        np.testing.assert_array_equal(introsort_argsort(values.copy()), order)  # deterministic
        np.testing.assert_array_equal(reference_argsort(values), order)  # the shortcuts change nothing
        # the order is a function of the values' ranks only: the dtype and the numbers do not matter
        ranks = np.unique(values, return_inverse=True, equal_nan=True)[1].reshape(-1)
        np.testing.assert_array_equal(introsort_argsort(ranks * 7 - 3), order)


def test_distinct_values_sort_exactly():
    values = np.random.default_rng(2).permutation(500).astype(np.float64)
    np.testing.assert_array_equal(introsort_argsort(values), np.argsort(values))
    np.testing.assert_array_equal(ascending_order(values, "stable"), np.argsort(values))
    with pytest.raises(ValueError, match="tie_order"):
        ascending_order(values, "fast")


def depth_limit_input(length: int, num_distinct: int) -> np.ndarray:
    """An input that drives the introsort to its depth limit (McIlroy's "antiqsort" adversary, run on the
    port): values are fixed lazily as the sort compares them. The last ``length − num_distinct`` values are
    left equal, so the heapsort that takes over sorts ties."""
    undecided = length
    values = [undecided] * length
    state = {"decided": 0, "candidate": -1}

    class Key:
        def __init__(self, index: int):
            self.index = index

        def __lt__(self, other: Key) -> bool:
            x, y = self.index, other.index
            if values[x] == undecided and values[y] == undecided and state["decided"] < num_distinct:
                chosen = x if x == state["candidate"] else y
                values[chosen] = state["decided"]
                state["decided"] += 1
            if values[x] == undecided:
                state["candidate"] = x
            elif values[y] == undecided:
                state["candidate"] = y
            return values[x] < values[y]

    with mock.patch.object(argsort_module, "_rank_keys", lambda array: [Key(i) for i in range(len(array))]):
        introsort_argsort(np.zeros(length))
    return np.asarray(values, dtype=np.float64)


def test_depth_limit_switches_to_heapsort():
    values = depth_limit_input(300, 200)
    heapsorted = []
    original = argsort_module._heapsort

    def spy(keys, order, start, count):
        heapsorted.append(count)
        original(keys, order, start, count)

    with mock.patch.object(argsort_module, "_heapsort", spy):
        order = introsort_argsort(values)
    assert heapsorted and heapsorted[0] > 16
    assert sorted(order.tolist()) == list(range(300)) and np.all(np.diff(values[order]) >= 0)


# --------------------------------------------------------------------------------------------------
# NumPy 1.26.4 itself, generic sort forced


@pytest.fixture(scope="session")
def numpy_126(tmp_path_factory) -> str:
    """Python of a throwaway venv with numpy==1.26.4 (skips the test when pip cannot install it)."""
    folder = tmp_path_factory.mktemp("numpy126")
    try:
        venv.create(folder / "venv", with_pip=True)
        python = str(folder / "venv" / "bin" / "python")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy==1.26.4"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as error:
        pytest.skip(f"cannot build a venv with numpy 1.26.4: {error}")
    return python


NUMPY_ARGSORT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from numpy.core._multiarray_umath import __cpu_features__
    assert np.__version__ == "1.26.4" and not __cpu_features__["AVX512_SKX"], "the generic sort is not forced"
    data = np.load(sys.argv[1])
    np.savez(sys.argv[2], **{name: np.argsort(data[name]) for name in data.files})
""")


@pytest.mark.slow
def test_matches_numpy_126_generic_sort(numpy_126, tmp_path):
    rng = np.random.default_rng(3)
    arrays = {}
    for length in range(1, 121):  # every short length, each kind of tie
        for dtype in (np.float32, np.float64):
            arrays[f"equal_{length}_{dtype.__name__}"] = np.full(length, 0.8, dtype)
            arrays[f"two_{length}_{dtype.__name__}"] = rng.choice([0.8, 0.5], size=length).astype(dtype)
    arrays.update({f"random_{index}": values for index, values in enumerate(_tie_heavy_arrays(rng, 1500, 2000))})
    for length, distinct in ((50, 30), (300, 200), (1000, 700), (2000, 1990)):
        values = depth_limit_input(length, distinct)
        arrays[f"depth_limit_{length}"], arrays[f"depth_limit_{length}_f32"] = values, values.astype(np.float32)
    np.savez(tmp_path / "in.npz", **arrays)
    script = tmp_path / "argsort.py"
    script.write_text(NUMPY_ARGSORT)
    environment = {**os.environ, "NPY_DISABLE_CPU_FEATURES": DISABLE_AVX512}
    subprocess.run(
        [numpy_126, str(script), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        check=True,
        env=environment,
        timeout=120,
    )
    expected = np.load(tmp_path / "out.npz")
    mismatches = [
        name for name, values in arrays.items() if not np.array_equal(reference_argsort(values), expected[name])
    ]
    assert not mismatches, json.dumps(mismatches[:10])
    # the check has teeth: NumPy's stable sort disagrees on most of these arrays
    assert sum(not np.array_equal(np.argsort(v, kind="stable"), expected[k]) for k, v in arrays.items()) > 1000

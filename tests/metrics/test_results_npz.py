"""cleanpose.metrics.results_npz: round trips pickle ↔ archive, no pickle when reading, clear errors."""

import pickle

import numpy as np
import pytest

from cleanpose.errors import ConfigError, DataFormatError
from cleanpose.metrics import convert_results, evaluate_results, load_results, load_results_npz, save_results_npz
from tests.metrics.result_builders import build_result_set


def _result_set():
    results = build_result_set(np.random.default_rng(11), 8, "nocs", mean_objects=2.5)
    for index, result in enumerate(results):
        result["image_path"] = f"real/test/scene_1/{index:04d}"
        result["index"] = index
    results.append({key: value[:0] for key, value in results[0].items() if isinstance(value, np.ndarray)})
    del results[2]["gt_handle_visibility"]  # a key missing from one image
    return results


def _assert_same(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert sorted(a) == sorted(b)
        for key, value in a.items():
            if isinstance(value, np.ndarray):
                assert b[key].dtype == value.dtype and b[key].shape == value.shape, key
                np.testing.assert_array_equal(b[key], value)
            else:
                assert b[key] == value and type(b[key]) is type(value), key


def test_round_trip_keeps_every_field(tmp_path):
    results = _result_set()
    names = [f"results_test_scene_1_{index:04d}.pkl" for index in range(len(results))]
    save_results_npz(results, tmp_path / "sub" / "results.npz", names)
    loaded = load_results_npz(tmp_path / "sub" / "results.npz")
    _assert_same(results, loaded.results)
    assert loaded.origins == [f"{tmp_path / 'sub' / 'results.npz'}[{name}]" for name in names]
    # load_results reads archives too, and the metric is the same
    again = load_results(tmp_path / "sub" / "results.npz", "nocs")
    np.testing.assert_array_equal(
        evaluate_results(again.results, "nocs").pose_ap, evaluate_results(results, "nocs").pose_ap
    )


def test_reading_an_archive_loads_no_pickle(tmp_path, monkeypatch):
    save_results_npz(_result_set(), tmp_path / "r.npz")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    assert len(load_results_npz(tmp_path / "r.npz").results) == 9


def test_convert_pickle_folder_to_archive_and_back(tmp_path):
    results = _result_set()
    source = tmp_path / "pickles"
    (source / "test_scene1").mkdir(parents=True)
    names = [f"test_scene1/{index:06d}.pkl" for index in range(len(results))]
    for result, name in zip(results, names):
        (source / name).write_bytes(pickle.dumps(result))
    assert convert_results(source, tmp_path / "results.npz", "housecat6d") == len(results)
    archive = load_results_npz(tmp_path / "results.npz")
    assert [origin.split("[")[-1][:-1] for origin in archive.origins] == names
    assert convert_results(tmp_path / "results.npz", tmp_path / "back") == len(results)
    _assert_same(results, [pickle.loads((tmp_path / "back" / name).read_bytes()) for name in names])
    assert convert_results(tmp_path / "results.npz", tmp_path / "all.pkl") == len(results)
    _assert_same(results, pickle.loads((tmp_path / "all.pkl").read_bytes()))
    # a pickle holding a list becomes an archive whose names say which entry each image was
    convert_results(tmp_path / "all.pkl", tmp_path / "from_list.npz")
    assert load_results_npz(tmp_path / "from_list.npz").origins[1].endswith("[all.pkl[1]]")


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataFormatError, match="only numeric or str arrays"):
        save_results_npz([{"pred_masks": np.array([object()])}], tmp_path / "x.npz")
    with pytest.raises(DataFormatError, match="trailing shapes"):
        save_results_npz([{"pred_RTs": np.zeros((1, 4, 4))}, {"pred_RTs": np.zeros((1, 3, 4))}], tmp_path / "x.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(DataFormatError, match="not a cleanpose results archive"):
        load_results_npz(tmp_path / "plain.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="broken.npz: cannot read"):
        load_results_npz(tmp_path / "broken.npz")
    save_results_npz([{"gt_class_ids": np.ones(1)}], tmp_path / "ok.npz", names=["/abs.pkl"])
    with pytest.raises(ConfigError, match="not a relative .pkl path"):
        convert_results(tmp_path / "ok.npz", tmp_path / "folder")
    with pytest.raises(ConfigError, match="archive already"):
        convert_results(tmp_path / "ok.npz", tmp_path / "again.npz")

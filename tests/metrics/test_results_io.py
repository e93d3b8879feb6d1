"""Loading and checking result dicts: file discovery order, splicing, and every bad-input row of
docs/metrics.md §12 (messages matched)."""

import logging
import pickle

import numpy as np
import pytest

from cleanpose.errors import DataFormatError
from cleanpose.metrics import collect_results, evaluate_results, load_results
from cleanpose.metrics.results_io import find_result_files
from tests.metrics.result_builders import build_result_set


def _results(count=3, seed=0, dataset="nocs"):
    return build_result_set(np.random.default_rng(seed), count, dataset, mean_objects=2.5, false_positive_rate=1.0)


def _dump(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle)


def test_nocs_folder_prefers_results_pickles_sorted(tmp_path):
    results = _results(3)
    _dump(tmp_path / "results_b.pkl", results[1])
    _dump(tmp_path / "results_a.pkl", [results[0]])
    _dump(tmp_path / "other.pkl", results[2])  # ignored: results*.pkl exist
    _dump(tmp_path / "sub" / "results_c.pkl", results[2])  # ignored: not directly inside
    loaded = load_results(tmp_path, "nocs")
    assert loaded.origins == [f"{tmp_path / 'results_a.pkl'}[0]", str(tmp_path / "results_b.pkl")]
    assert loaded.results[0] is not results[0]
    np.testing.assert_array_equal(loaded.results[1]["pred_RTs"], results[1]["pred_RTs"])


def test_folder_without_results_pickles_reads_every_pickle_below(tmp_path):
    results = _results(3, dataset="housecat6d")
    _dump(tmp_path / "test_scene2" / "000001.pkl", results[1])
    _dump(tmp_path / "test_scene10" / "000000.pkl", results[2])
    _dump(tmp_path / "test_scene1" / "000003.pkl", results[0])
    for dataset in ("nocs", "housecat6d"):
        files = find_result_files(tmp_path, dataset)
        assert [f.relative_to(tmp_path).as_posix() for f in files] == [
            "test_scene1/000003.pkl",
            "test_scene10/000000.pkl",
            "test_scene2/000001.pkl",
        ]
    loaded = load_results(tmp_path, "housecat6d")
    direct = evaluate_results([results[0], results[2], results[1]], "housecat6d")
    from_disk = evaluate_results(loaded.results, "housecat6d", origins=loaded.origins)
    np.testing.assert_array_equal(from_disk.pose_ap, direct.pose_ap)


def test_single_pickle_with_a_list_or_a_dict(tmp_path):
    results = _results(2)
    _dump(tmp_path / "all.pkl", results)
    _dump(tmp_path / "one.pkl", results[0])
    assert load_results(tmp_path / "all.pkl", "nocs").origins == [f"{tmp_path / 'all.pkl'}[{i}]" for i in range(2)]
    assert len(load_results(tmp_path / "one.pkl", "nocs").results) == 1


def test_loading_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no result pickles under"):
        load_results(tmp_path, "nocs")
    with pytest.raises(DataFormatError, match="no such file or folder"):
        load_results(tmp_path / "missing", "nocs")
    (tmp_path / "results_bad.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match=r"results_bad\.pkl: cannot read the pickle"):
        load_results(tmp_path, "nocs")
    _dump(tmp_path / "results_bad.pkl", 42)
    with pytest.raises(DataFormatError, match=r"results_bad\.pkl: expected a result dict or a list of them; got int"):
        load_results(tmp_path, "nocs")
    _dump(tmp_path / "results_bad.pkl", [{}, "text"])
    with pytest.raises(DataFormatError, match=r"results_bad\.pkl\[1\]: expected a result dict; got str"):
        load_results(tmp_path, "nocs")


def test_error_names_file_index_key_and_instance(tmp_path):
    results = _results(2)
    results[1]["pred_RTs"][1, 3, 3] = 2.0
    _dump(tmp_path / "all.pkl", results)
    loaded = load_results(tmp_path / "all.pkl", "nocs")
    with pytest.raises(
        DataFormatError,
        match=r"all\.pkl\[1\]: key 'pred_RTs', instance 1: last row is not exactly "
        r"\[0, 0, 0, 1\] \(\[0\.0, 0\.0, 0\.0, 2\.0\]\)",
    ):
        evaluate_results(loaded.results, "nocs", origins=loaded.origins)


def _broken(mutate):
    results = _results(2)
    mutate(results[1])
    return results


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("pred_scores"), r"results\[1\]: missing key 'pred_scores'"),
        (
            lambda r: r.update(gt_RTs=r["gt_RTs"][:, :3]),
            r"results\[1\]: key 'gt_RTs' has shape \(\d, 3, 4\); expected \(\d, 4, 4\)",
        ),
        (
            lambda r: r.update(pred_scales=r["pred_scales"][:, :1]),
            r"key 'pred_scales' has shape \(\d, 1\); expected \(\d, 3\)",
        ),
        (
            lambda r: r.update(pred_scores=r["pred_scores"][:-1]),
            r"key 'pred_scores' has shape \(\d,\); expected \(\d,\)",
        ),
        (
            lambda r: r.update(gt_handle_visibility=np.ones(7)),
            r"key 'gt_handle_visibility' has shape \(7,\); expected \(\d,\), one entry per gt",
        ),
        (lambda r: r["pred_class_ids"].__setitem__(0, 7), r"key 'pred_class_ids', instance 0: class id outside 1\.\.6"),
        (lambda r: r["gt_class_ids"].__setitem__(0, 0), r"key 'gt_class_ids', instance 0: class id outside 1\.\.6"),
        (lambda r: r["gt_RTs"].__setitem__((1, 0, 3), np.nan), r"key 'gt_RTs', instance 1: contains NaN or inf"),
        (lambda r: r["pred_scales"].__setitem__((0, 2), np.inf), r"key 'pred_scales', instance 0: contains NaN or inf"),
        (lambda r: r["pred_scores"].__setitem__(1, np.nan), r"key 'pred_scores', instance 1: contains NaN or inf"),
        (
            lambda r: r["pred_RTs"].__setitem__((0, 2), -r["pred_RTs"][0, 2]),
            r"key 'pred_RTs', instance 0: det\(RT\[:3, :3\]\) <= 0",
        ),
        (
            lambda r: r["gt_RTs"].__setitem__((0, 0, 1), r["gt_RTs"][0, 0, 1] + 0.05),
            r"key 'gt_RTs', instance 0: RT\[:3, :3\] is not a scaled rotation",
        ),
        (lambda r: r["gt_scales"].__setitem__((1, 1), 0.0), r"key 'gt_scales', instance 1: box extents must be > 0"),
    ],
)
def test_bad_input_rows(mutate, message):
    with pytest.raises(DataFormatError, match=message):
        evaluate_results(_broken(mutate), "nocs")


def test_not_a_dict():
    with pytest.raises(DataFormatError, match=r"results\[0\]: expected a dict of result arrays; got list"):
        collect_results([[1, 2]], "nocs")


def test_tolerated_inputs(caplog):
    results = _results(4)
    reference = evaluate_results(results, "nocs")
    for result in results:
        result.pop("pred_bboxes")  # optional and ignored
    results[0]["pred_bboxes"] = np.zeros((len(results[0]["pred_class_ids"]), 4))  # all-zero rows: fine
    np.testing.assert_array_equal(evaluate_results(results, "nocs").pose_ap, reference.pose_ap)
    for result in results:
        result["gt_handle_visibility"][:] = 0
    for result in results[1:3]:
        result.pop("gt_handle_visibility")
    with caplog.at_level(logging.WARNING, logger="cleanpose.metrics.results_io"):
        arrays = collect_results(results, "nocs")
    assert [record.getMessage() for record in caplog.records] == [
        "2 result dicts have no 'gt_handle_visibility'; their gts count as handle visible"
    ]
    missing = np.isin(arrays.gt_image, [1, 2])
    assert arrays.gt_handle_visible[missing].all()  # missing → 1
    # given as 0: only mugs (class 6) are handle-less; other classes always count as visible
    np.testing.assert_array_equal(arrays.gt_handle_visible[~missing], arrays.gt_class[~missing] != 6)


def test_empty_images_are_skipped_and_handles_forced_in_housecat6d():
    results = _results(3, dataset="housecat6d")
    empty = {key: value[:0] for key, value in results[0].items()}
    arrays = collect_results([empty, *results], "housecat6d")
    assert arrays.origins == ["results[1]", "results[2]", "results[3]"]
    assert arrays.gt_handle_visible.all()

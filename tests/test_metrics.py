import numpy as np
import pytest

from edgeseg.metrics import case_scores, dice_from_counts, mean_scores, overlap_counts


def test_dice_and_iou_hand_computed():
    target = np.array([[0, 1, 1], [0, 1, 0]])
    pred = np.array([[0, 1, 0], [1, 1, 0]])
    s = case_scores(pred, target, ["background", "fg"])["fg"]
    # |P|=3, |T|=3, |P∩T|=2 → Dice 4/6, IoU 2/4
    assert s["dice"] == pytest.approx(4 / 6)
    assert s["iou"] == pytest.approx(0.5)


def test_empty_on_both_sides_is_perfect_and_one_side_empty_is_zero():
    empty = np.zeros((4, 4), int)
    some = empty.copy()
    some[1, 1] = 1
    assert case_scores(empty, empty, ["bg", "fg"])["fg"]["dice"] == 1.0
    assert case_scores(some, empty, ["bg", "fg"])["fg"]["dice"] == 0.0
    assert case_scores(empty, some, ["bg", "fg"])["fg"]["iou"] == 0.0


def test_multiclass_reports_foreground_union():
    target = np.array([1, 2, 2, 0])
    pred = np.array([2, 2, 1, 0])
    s = case_scores(pred, target, ["bg", "a", "b"])
    assert s["a"]["dice"] == 0.0
    assert s["b"]["dice"] == pytest.approx(2 * 1 / 4)
    assert s["foreground"]["dice"] == 1.0  # every foreground pixel is foreground in both


def test_counts_and_mean():
    c = overlap_counts(np.array([1, 1, 0]), np.array([1, 0, 0]), 2)
    assert c[1].tolist() == [1, 2, 1]
    assert dice_from_counts(c)[1] == pytest.approx(2 / 3)
    m = mean_scores([{"fg": {"dice": 1.0}}, {"fg": {"dice": 0.5}}])
    assert m["fg"]["dice"] == 0.75

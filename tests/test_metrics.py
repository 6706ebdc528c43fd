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


def test_sensitivity_specificity_hand_computed():
    from edgeseg.metrics import sensitivity_specificity

    target = np.array([[0, 1, 1], [0, 1, 0]])
    pred = np.array([[0, 1, 0], [1, 1, 0]])
    counts = overlap_counts(pred, target, 2)
    sens, spec = sensitivity_specificity(counts, target.size)
    # foreground: TP 2, FN 1, FP 1, TN 2 → sensitivity 2/3, specificity 2/3
    assert sens[1] == pytest.approx(2 / 3) and spec[1] == pytest.approx(2 / 3)
    empty = np.zeros((2, 3), int)
    sens, spec = sensitivity_specificity(overlap_counts(empty, empty, 2), 6)
    assert np.isnan(sens[1]) and spec[1] == 1.0  # no positives: sensitivity undefined


def test_hd95_empty_cases_and_shifted_square():
    from edgeseg.metrics import hd95

    empty = np.zeros((10, 10), bool)
    square = empty.copy()
    square[2:6, 2:6] = True
    assert hd95(empty, empty) == 0.0
    assert hd95(square, empty) == float("inf") and hd95(empty, square) == float("inf")
    assert hd95(square, square) == 0.0
    shifted = np.roll(square, 2, axis=1)  # every surface point moves 2 columns; the nearest surface is ≤ 2 away
    assert hd95(square, shifted) == pytest.approx(2.0)
    assert hd95(square, shifted, spacing=(1.0, 0.5)) == pytest.approx(1.0)  # columns are 0.5 mm wide


def test_hd95_3d_honours_anisotropic_spacing():
    from edgeseg.metrics import hd95

    vol = np.zeros((12, 12, 12), bool)
    vol[3:8, 3:8, 3:8] = True
    shifted = np.roll(vol, 3, axis=0)  # 3 voxels along axis 0
    assert hd95(vol, shifted) == pytest.approx(3.0)
    assert hd95(vol, shifted, spacing=(2.5, 1.0, 1.0)) == pytest.approx(7.5)  # 2.5 mm slices
    assert hd95(vol, np.roll(vol, 3, axis=2), spacing=(2.5, 1.0, 1.0)) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="spacing"):
        hd95(vol, shifted, spacing=(1.0, 1.0))



def test_hd95_on_the_bounding_box_equals_the_whole_image():
    """HD95 is computed on the masks' bounding box for speed; a mask touching the border must not change."""
    from edgeseg.metrics import hd95

    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.random((40, 50)) > 0.7, rng.random((40, 50)) > 0.8
        a[:, :3] = False
        b[0, :] = True  # touches the image border
        big_a, big_b = np.zeros((80, 90), bool), np.zeros((80, 90), bool)
        big_a[:40, :50], big_b[:40, :50] = a, b  # same border contact at rows/cols 0
        assert hd95(a, b, (1.0, 0.7)) == pytest.approx(hd95(big_a, big_b, (1.0, 0.7)))


def test_full_case_scores_and_means_skip_undefined_values():
    from edgeseg.metrics import undefined_hd95

    target = np.zeros((8, 8), int)
    target[1:4, 1:4] = 1            # organ 9 px
    pred = np.zeros((8, 8), int)
    pred[1:4, 1:3] = 1              # 6 px inside it
    pred[6, 6] = 2                  # a lesion the ground truth does not have
    s = case_scores(pred, target, ["background", "organ", "lesion"], full=True, spacing=(0.5, 0.5))
    assert s["organ"]["sensitivity"] == pytest.approx(6 / 9)
    assert s["organ"]["specificity"] == pytest.approx(1.0)  # no false positive among the 55 negatives
    assert s["organ"]["hd95"] == pytest.approx(0.5)          # the missing column is one 0.5 mm pixel away
    assert np.isnan(s["lesion"]["sensitivity"])              # no positives in the ground truth
    assert s["lesion"]["specificity"] == pytest.approx(63 / 64)
    assert s["lesion"]["hd95"] == float("inf")               # exactly one side empty
    assert s["foreground"]["sensitivity"] == pytest.approx(6 / 9)
    other = case_scores(target, target, ["background", "organ", "lesion"], full=True)
    mean = mean_scores([s, other])
    assert mean["lesion"]["hd95"] == 0.0                     # inf left out; the other case has both empty
    assert np.isnan(mean["lesion"]["sensitivity"])           # undefined in both cases
    assert mean["organ"]["sensitivity"] == pytest.approx((6 / 9 + 1) / 2)
    assert undefined_hd95([s, other]) == {"organ": 0, "lesion": 1, "foreground": 0}

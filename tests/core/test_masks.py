"""The mask editor behind the inpainting canvas: what a brush, eraser, rectangle, invert and
clear mark, and that undo/redo walk gestures exactly."""

from __future__ import annotations

import numpy as np
import pytest

from genstudio.core.trained.masks import MaskHistory


def test_a_brush_marks_the_pixels_whose_centres_it_reaches():
    history = MaskHistory(9)
    history.paint((4.5, 4.5), (4.5, 4.5), radius=1.0)  # a dab on pixel (4, 4)
    expected = np.zeros((9, 9), bool)
    expected[4, 3:6] = expected[3:6, 4] = True  # centres within 1 px: the pixel and its 4 neighbours
    assert np.array_equal(history.mask, expected)
    history.paint((0.5, 8.5), (8.5, 8.5), radius=0.5)  # a line along the bottom row
    assert history.mask[8].all() and history.filled() == 5 + 9


def test_a_stroke_is_one_undo_step_and_the_eraser_keeps():
    history = MaskHistory(8)
    history.begin_stroke()
    for x in range(8):
        history.paint((x + 0.5, 1.5), (x + 1.5, 1.5), radius=0.5)
    history.end_stroke()
    assert history.mask[1].all() and history.filled() == 8
    history.paint((3.5, 1.5), (4.5, 1.5), radius=0.5, fill=False)
    assert history.filled() == 6
    assert history.undo() and history.filled() == 8   # the eraser's dab
    assert history.undo() and history.filled() == 0   # the whole stroke at once
    assert not history.undo() and not history.can_undo
    assert history.redo() and history.filled() == 8
    assert history.redo() and history.filled() == 6 and not history.redo()


def test_rectangles_take_any_corner_order_and_a_click_marks_one_pixel():
    history = MaskHistory(10)
    history.fill_rect((7.9, 6.2), (2.1, 1.6))
    expected = np.zeros((10, 10), bool)
    expected[2:6, 2:8] = True  # centres 2.5…5.5 in y, 2.5…7.5 in x
    assert np.array_equal(history.mask, expected)
    history.clear()
    history.fill_rect((3.2, 3.3), (3.3, 3.4))
    assert history.filled() == 1 and history.mask[3, 3]
    history.fill_rect((-5, -5), (-1, -1))  # off the canvas: nothing, and no empty undo step
    assert history.filled() == 1
    history.undo()
    assert history.filled() == 0


def test_invert_clear_and_replace_are_gestures_and_new_edits_drop_the_redo_branch():
    history = MaskHistory(4)
    history.fill_rect((0, 0), (2, 4))
    history.invert()
    assert history.mask[:, 2:].all() and not history.mask[:, :2].any()
    history.clear()
    assert history.filled() == 0
    history.clear()  # already clear: no step
    assert history.undo() and history.filled() == 8
    history.replace(np.eye(4, dtype=bool))
    assert not history.can_redo  # the cleared state is gone from redo after a new edit
    assert history.filled() == 4
    with pytest.raises(ValueError, match="shape"):
        history.replace(np.zeros((3, 3), bool))
    with pytest.raises(ValueError):
        history.mask[0, 0] = True  # read-only: edits go through the history


def test_the_undo_stack_is_bounded():
    history = MaskHistory(4, limit=3)
    for i in range(6):
        history.paint((i % 4 + 0.5, i // 4 + 0.5), (i % 4 + 0.5, i // 4 + 0.5), radius=0.5)
    assert history.filled() == 6
    assert sum(history.undo() for _ in range(10)) == 3 and history.filled() == 3

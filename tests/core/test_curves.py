"""A run's curves as the training plot shows them (core/runs/curves.py), without a window."""

import math

import pytest

from genstudio.core.runs.curves import Curves


def feed(curves, steps=(10, 20, 30)):
    for step in steps:
        curves.add_record(step, {"loss": 3000.0 / step, "bpd": 8.0 - step / 100, "kl": -1.0})


def test_the_first_records_show_bpd_alone():
    curves = Curves()
    feed(curves)
    assert list(curves.curves) == ["loss", "bpd", "kl"] and curves.shown == {"bpd"}


def test_the_familys_choice_comes_first():
    curves = Curves()
    curves.first_shown = ("d_loss", "g_loss", "absent")
    curves.add_record(1, {"d_loss": 1.0, "g_loss": 2.0, "gp": 0.0})
    assert curves.shown == {"d_loss", "g_loss"}


def test_without_bpd_or_loss_the_first_metric_is_shown():
    curves = Curves()
    curves.add_record(1, {"d_real": 0.5, "d_fake": 0.4})
    assert curves.shown == {"d_real"}


def test_hiding_every_curve_holds_until_a_new_metric_arrives():
    curves = Curves()
    feed(curves)
    curves.set_shown("bpd", False)
    feed(curves, (40,))
    assert curves.shown == set()
    curves.add_record(50, {"fid": 40.0})  # an evaluation's figure: the defaults come back
    assert curves.shown == {"bpd"}


def test_the_smoothed_curve_is_a_debiased_moving_average_and_zero_is_raw():
    curves = Curves()
    curves.set_smoothing(0.9)
    for step, value in enumerate([4.0, 2.0, math.nan, 2.0]):
        curves.add_record(step, {"bpd": value})
    smoothed = curves.curves["bpd"].smoothed
    assert smoothed[0] == 4.0  # starts at the first value, not pulled towards 0
    assert smoothed[1] == pytest.approx((0.9 * 0.1 * 4 + 0.1 * 2) / (0.9 * 0.1 + 0.1))
    assert smoothed[2] == smoothed[1]  # a NaN point leaves the average where it was
    curves.set_smoothing(0.0)
    assert curves.curves["bpd"].smoothed[:2] == [4.0, 2.0] and curves.curves["bpd"].smoothed[3] == 2.0


def test_history_replaces_everything_and_skips_bookkeeping():
    curves = Curves()
    feed(curves)
    curves.load_history([{"step": 5, "loss": 1.0, "time": 0.1, "images_per_sec": 9.0, "final": True},
                         {"step": 6, "loss": 0.5, "time": 0.2, "images_per_sec": 9.0}])
    assert list(curves.curves) == ["loss"] and curves.shown == {"loss"}
    assert curves.curves["loss"].steps == [5.0, 6.0]

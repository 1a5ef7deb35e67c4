"""The metrics plot on its own: default curve, toggles, smoothing, log axis, history."""

from __future__ import annotations

import numpy as np
import pytest

from genstudio.app.panels import MetricsPlot


@pytest.fixture
def plot(qtbot):
    widget = MetricsPlot()
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    widget.show()
    return widget


def feed(plot, n=20):
    for step in range(10, 10 * n + 1, 10):
        plot.add_record(step, {"loss": 3000.0 / step, "bpd": 8.0 - step / 100, "kl": -1.0})


def test_bpd_is_shown_first_and_curves_update_on_the_timer(qtbot, plot):
    feed(plot)
    assert plot.shown_metrics() == ["bpd"]
    assert len(plot.curve_data("bpd")[0]) < 20  # not redrawn per record ...
    qtbot.waitUntil(lambda: len(plot.curve_data("bpd")[0]) == 20, timeout=2_000)  # ... but soon
    plot.set_shown("loss", True)
    assert set(plot.shown_metrics()) == {"bpd", "loss"}
    assert len(plot.curve_data("loss")[0]) == 20


def test_smoothing_zero_draws_the_raw_values(plot):
    feed(plot, 5)
    plot.smoothing.setValue(0)
    _, y = plot.curve_data("bpd")
    assert np.allclose(y, [7.9, 7.8, 7.7, 7.6, 7.5])
    plot.smoothing.setValue(90)
    _, smoothed = plot.curve_data("bpd")
    assert smoothed[0] == pytest.approx(7.9)  # debiased: starts at the first value
    assert smoothed[-1] > 7.5


def test_log_axis_with_non_positive_values_does_not_warn(qtbot, plot):
    feed(plot)
    plot.set_shown("kl", True)  # all negative
    plot.log_check.setChecked(True)
    plot.refresh()
    plot.grab()  # paints; filterwarnings=error turns any RuntimeWarning into a failure


def test_history_replaces_the_curves(plot):
    feed(plot)
    plot.load_history([{"step": 5, "loss": 1.0, "time": 0.1, "images_per_sec": 9.0},
                       {"step": 6, "loss": 0.5, "time": 0.2, "images_per_sec": 9.0}])
    assert plot.metric_names() == ["loss"]
    assert plot.shown_metrics() == ["loss"]
    assert list(plot.curve_data("loss")[0]) == [5, 6]


def test_a_user_who_hides_every_curve_is_not_overruled(plot):
    feed(plot, 2)
    plot.set_shown("bpd", False)
    feed(plot, 2)
    assert plot.shown_metrics() == []


def test_a_gan_run_shows_both_players_and_d_on_real_and_fake_first(plot):
    from genstudio.core.families import family_class

    plot.set_first_shown(family_class("gan").plotted_metrics)
    for step in (10, 20):
        plot.add_record(step, {"d_loss": 1.3, "g_loss": 0.8, "d_real": 0.5, "d_fake": 0.4, "gp": 0.0})
    assert plot.shown_metrics() == ["d_loss", "g_loss", "d_real", "d_fake"]


def test_many_metric_toggles_wrap_onto_lines_inside_the_plots_width(qtbot, plot):
    # An evaluation with sample metrics adds about a dozen; none may be cut off or scrolled to.
    names = [f"metric_number_{i}" for i in range(16)]
    plot.add_record(10, dict.fromkeys(names, 1.0))
    boxes = [plot._drawn[name].checkbox for name in names]

    def laid_out() -> bool:
        return all(box.isVisible() and box.width() >= box.sizeHint().width() for box in boxes)

    qtbot.waitUntil(laid_out, timeout=2_000)
    right_edges = [box.mapTo(plot, box.rect().topRight()).x() for box in boxes]
    assert max(right_edges) < plot.width()
    rows = {box.mapTo(plot, box.rect().topLeft()).y() for box in boxes}
    assert len(rows) > 1  # wrapped
    assert plot.plot.height() > plot.height() // 3  # the curves keep most of the room
    plot.clear()
    assert plot.metric_row.count() == 1  # only the "Show:" label is left


@pytest.mark.parametrize("step, value", [(10, 7.91734011515361), (0, 0.0), (500, -3.5)])
def test_one_point_gets_readable_axes_around_it(qtbot, plot, step, value):
    # pyqtgraph padded a one-value range by 1e-14, labelling ticks like 7.91734011515361.
    plot.add_record(step, {"bpd": value})
    plot.refresh()
    (x_low, x_high), (y_low, y_high) = plot.plot.getPlotItem().getViewBox().viewRange()
    assert x_low < step < x_high and x_high - x_low >= 1
    assert y_low < value < y_high and y_high - y_low >= 0.5
    plot.add_record(step + 10, {"bpd": value + 100})  # two values: auto-ranged again
    plot.refresh()
    (x_low, x_high), (y_low, y_high) = plot.plot.getPlotItem().getViewBox().viewRange()
    assert x_low <= step and x_high >= step + 10 and y_low <= value and y_high >= value + 100

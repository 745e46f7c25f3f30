"""Sweep plots (``sweep/plots.py``): what each figure shows, its file name, and no plots without matplotlib.

The figures are drawn with matplotlib's Agg backend and caught before they are saved (``_save_figure``
replaced), so what is drawn is read back from them: the heat maps' cells (the best over the other swept
values, empty where nothing was measured, failed / SGLang-chosen / adaptive points left out), the
speedup plot's one line per setting over the temperatures, and the predicted-vs-measured scatter by role.
One test saves for real: a PNG under the documented name, and no figure left open.
"""

from __future__ import annotations

import logging
import math
import sys

import pytest

import automodel_spec.sweep.plots as plots
from automodel_spec.sweep.prediction_table import CONFIRMED, FIRST
from automodel_spec.sweep.rows import COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(steps, topk, tokens, *, point=None, t=0.0, c=1, rate=None, status="ok", **fields) -> dict:
    """A summary row (``sweep.rows.COLUMNS``) of one point and level; ``steps=None``: SGLang chose the setting."""
    r = dict.fromkeys(COLUMNS)
    r.update(point=point or f"{steps}/{topk}/{tokens}", status=status, temperature=t, concurrency=c, request_rate=rate,
             requested_num_steps=steps, requested_topk=topk, requested_num_draft_tokens=tokens, **fields)
    return r


@pytest.fixture
def drawn(monkeypatch):
    """File name -> the figure that would have been saved under it (closed after the test)."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    figures = {}

    def keep(plt_, fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr(plots, "_save_figure", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def cells(ax) -> list[list[float | None]]:
    """The heat map's values, rows by topk, columns by steps (``None``: an empty cell)."""
    data = ax.images[0].get_array()
    return [[None if math.isnan(float(v)) else float(v) for v in line] for line in data.filled(math.nan)]


HEAT_ROWS = [
    row(1, 1, 2, output_tok_per_s=100.0, accept_length=1.8),
    row(3, 1, 4, output_tok_per_s=150.0, accept_length=3.0),
    row(3, 4, 13, output_tok_per_s=170.0, accept_length=3.5),
    row(3, 4, 10, output_tok_per_s=190.0, accept_length=3.2),  # fewer draft tokens: faster, accepts less
    row(1, 4, 5, status="failed", output_tok_per_s=999.0, accept_length=9.0),
    row(None, None, None, point="auto", output_tok_per_s=999.0, accept_length=9.0),
    row(3, 1, 4, point="adaptive", requested_adaptive=True, output_tok_per_s=999.0, accept_length=9.0),
    row(3, 1, 4, c=4, rate=2.5, output_tok_per_s=80.0, accept_length=2.9),
    row(3, 1, 4, c=0, rate=2.0, output_tok_per_s=70.0, accept_length=2.9),
]


def test_heatmaps_show_the_best_of_each_cell_over_steps_and_topk(drawn, tmp_path):
    out = plots.write_heatmaps(tmp_path, HEAT_ROWS, [(0.0, 1), (0.0, 4, 2.5), (0.0, 0, 2.0), (0.5, 1)])
    # one per level that has a measured point (temperature 0.5 has none); open loops by rate and cap
    assert [p.name for p in out] == ["heatmap_T0_c1.png", "heatmap_T0_r2.5_c4.png", "heatmap_T0_r2.png"]
    assert all(p.parent == tmp_path for p in out)
    speed, accept = drawn["heatmap_T0_c1.png"].axes[:2]
    # the best over draft tokens of each metric on its own; (1 step, topk 4) was not measured (it failed);
    # the failed, SGLang-chosen and adaptive points' 999s are not in any cell
    assert cells(speed) == [[100.0, 150.0], [None, 190.0]]
    assert cells(accept) == [[1.8, 3.0], [None, 3.5]]
    assert [t.get_text() for t in speed.get_xticklabels()] == ["1", "3"]  # num_steps
    assert [t.get_text() for t in speed.get_yticklabels()] == ["1", "4"]  # topk
    assert (speed.get_xlabel(), speed.get_ylabel()) == ("num_steps", "topk")
    assert [t.get_text() for t in speed.texts] == ["100.0", "150.0", "190.0"]  # no label on an empty cell
    assert [t.get_text() for t in accept.texts] == ["1.80", "3.00", "3.50"]
    assert speed.get_title() == "output tokens/s (temperature 0, concurrency 1)"
    assert accept.get_title() == "accept length (temperature 0, concurrency 1)"
    assert drawn["heatmap_T0_r2.5_c4.png"].axes[0].get_title() == \
        "output tokens/s (temperature 0, 2.5 requests/s, at most 4 in flight)"


SPEEDUP_ROWS = [
    row(3, 1, 4, t=0.0, speedup=2.2, accept_length=3.0),
    row(3, 1, 4, t=1.0, speedup=1.5, accept_length=2.0),
    row(3, 4, 13, t=1.0, speedup=1.7, accept_length=2.5),
    row(3, 4, 13, t=0.0, speedup=2.5, accept_length=3.5),
    row(3, 1, 4, c=4, t=0.0, speedup=1.9, accept_length=3.0),
    row(3, 1, 4, c=4, t=1.0, speedup=1.2, accept_length=2.0),
    row(None, None, None, point="auto", t=0.0, speedup=2.0, accept_length=3.1, effective_num_steps=5,
        effective_topk=4, effective_num_draft_tokens=8),
    row(None, None, None, point="auto", t=1.0, speedup=1.4, accept_length=2.2, effective_num_steps=5,
        effective_topk=4, effective_num_draft_tokens=8),
    row(3, 1, 4, point="adaptive", requested_adaptive=True, t=0.0, speedup=2.1, accept_length=2.9),
    row(3, 1, 4, point="adaptive", requested_adaptive=True, t=1.0, speedup=1.3, accept_length=1.9),
    row(2, 1, 3, t=0.0, speedup=None, accept_length=2.5),  # no baseline: no speedup to draw
    row(2, 1, 3, t=0.0, rate=5.0, speedup=3.0, accept_length=2.5),  # open loop: not on this plot
]


def test_speedup_plot_draws_one_line_per_setting_over_the_temperatures(drawn, tmp_path):
    out = plots.write_speedup_plot(tmp_path, SPEEDUP_ROWS)
    assert [p.name for p in out] == ["speedup_vs_accept_c1.png", "speedup_vs_accept_c4.png"]
    (ax,) = drawn["speedup_vs_accept_c1.png"].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    chain = lines["num_steps=3 topk=1 num_draft_tokens=4"]
    # the setting's temperatures, in order of accept length
    assert (list(chain.get_xdata()), list(chain.get_ydata())) == ([2.0, 3.0], [1.5, 2.2])
    tree = lines["num_steps=3 topk=4 num_draft_tokens=13"]
    assert list(tree.get_xdata()) == [2.5, 3.5]
    assert (chain.get_marker(), tree.get_marker()) == ("o", "s")  # marker by topk
    auto = lines["num_steps=5 topk=4 num_draft_tokens=8 (SGLang's choice)"]
    assert (auto.get_color(), auto.get_linestyle()) == ("black", "--")
    adaptive = lines["num_steps=3 topk=1 num_draft_tokens=4 adaptive=true (SGLang's adaptive mode)"]
    assert adaptive.get_color() == "red"
    ideal = lines["speedup = accept length"]
    assert list(ideal.get_xdata()) == [1, 3.5] == list(ideal.get_ydata())  # up to the highest accept length
    assert "num_steps=2 topk=1 num_draft_tokens=3" not in lines  # no speedup / open loop only
    assert ax.get_xlabel() == "accept length (tokens per verify step)"
    (ax4,) = drawn["speedup_vs_accept_c4.png"].axes
    assert [line.get_label() for line in ax4.get_lines()][:1] == ["num_steps=3 topk=1 num_draft_tokens=4"]
    assert sum(1 for line in ax4.get_lines() if "num_steps" in line.get_label()) == 1


def test_speedup_plot_needs_two_temperatures(monkeypatch, tmp_path, caplog):
    # one temperature gives one accept length per setting: nothing to draw, and matplotlib is not asked
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_temperature = [r for r in SPEEDUP_ROWS if r["temperature"] == 0.0]
    with caplog.at_level(logging.WARNING):
        assert plots.write_speedup_plot(tmp_path, one_temperature) == []
    assert not caplog.records and list(tmp_path.iterdir()) == []


def test_predicted_plot_shows_each_level_and_role(drawn, tmp_path):
    rows = [row(3, 1, 4, role=FIRST, predicted_tok_per_s=100.0, output_tok_per_s=104.0),
            row(2, 1, 3, role=CONFIRMED, predicted_tok_per_s=110.0, output_tok_per_s=100.0),
            row(5, 1, 6, role=None, predicted_tok_per_s=90.0, output_tok_per_s=95.0),
            row(2, 1, 3, c=4, role=CONFIRMED, predicted_tok_per_s=300.0, output_tok_per_s=280.0),
            row(1, 1, 2, predicted_tok_per_s=None, output_tok_per_s=80.0),  # not predicted: not drawn
            row(1, 1, 2, status="failed", role=CONFIRMED, predicted_tok_per_s=50.0, output_tok_per_s=1.0)]
    out = plots.write_predicted_plot(tmp_path, rows)
    assert [p.name for p in out] == ["predicted_vs_measured.png"]
    (ax,) = drawn["predicted_vs_measured.png"].axes
    points = {c.get_label(): [tuple(map(float, xy)) for xy in c.get_offsets()] for c in ax.collections}
    assert points == {
        "temperature 0, concurrency 1, measured first": [(100.0, 104.0)],
        "temperature 0, concurrency 1, confirmed": [(110.0, 100.0)],
        "temperature 0, concurrency 1, other": [(90.0, 95.0)],
        "temperature 0, concurrency 4, confirmed": [(300.0, 280.0)],
    }
    (diagonal,) = [line for line in ax.get_lines() if line.get_label() == "measured = predicted"]
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata()) == [0, pytest.approx(300.0 * 1.05)]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted tokens/s", "measured tokens/s")


def test_no_predictions_no_plot(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not even asked for
    assert plots.write_predicted_plot(tmp_path, [row(3, 1, 4, output_tok_per_s=100.0)]) == []


def test_without_matplotlib_no_heatmaps_and_one_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with caplog.at_level(logging.WARNING):
        assert plots.write_heatmaps(tmp_path, HEAT_ROWS, [(0.0, 1)]) == []
        assert plots.write_speedup_plot(tmp_path, SPEEDUP_ROWS) == []
    assert [r.getMessage() for r in caplog.records] == ["[sweep] matplotlib is not installed: no plots "
                                                        "(pip install matplotlib)"] * 2
    assert list(tmp_path.iterdir()) == []


def test_a_heatmap_is_saved_as_png_and_its_figure_closed(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    open_before = set(plt.get_fignums())
    (path,) = plots.write_heatmaps(tmp_path, HEAT_ROWS[:4], [(0.0, 1)])
    assert path == tmp_path / "heatmap_T0_c1.png" and path.read_bytes().startswith(PNG_MAGIC)
    # a sweep of many levels draws many figures: each is closed once saved
    assert set(plt.get_fignums()) == open_before

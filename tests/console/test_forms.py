"""A model's parameter schema as playground fields, and the chart helpers."""

from __future__ import annotations

from datetime import UTC, datetime

from app.admin.reports import TimelineRow
from app.catalog.loader import load_catalog
from app.console.charts import bar_chart, bucket_keys, fill_buckets, window_start
from app.console.forms import model_form
from tests.console.conftest import CATALOG


def test_each_parameter_type_gets_its_widget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "models.yaml"
    path.write_text(CATALOG)
    catalog = load_catalog(path, {})
    form = model_form(catalog.models["local-preview"])
    fields = {field.name: field for field in form.fields}
    assert (form.prompt_max_length, form.max_n, form.output_formats) == (
        200,
        2,
        ["png", "jpeg", "webp"],
    )
    assert (
        form.edit and form.max_reference_images == 2 and form.streams and form.partial_images == 3
    )
    width = fields["width"]
    assert (width.widget, width.min, width.max, width.step, width.default) == (
        "number",
        64,
        1024,
        "8",
        256,
    )
    assert fields["seed"].default is None and fields["seed"].step == "1"
    mood = fields["mood"]
    assert mood.widget == "select" and [o.json for o in mood.options] == ['"plain"', '"vivid"']
    assert mood.default == "plain"
    assert (fields["tiled"].widget, fields["tiled"].default) == ("checkbox", False)
    assert (fields["guidance"].widget, fields["guidance"].step) == ("number", "any")
    assert (fields["label"].widget, fields["label"].max_length) == ("text", 40)
    hidden = model_form(catalog.hidden["far-away"].model)
    assert not hidden.edit and hidden.fields == [] and hidden.partial_images == 0


def test_buckets_cover_the_window_with_zeros_where_nothing_ran() -> None:
    now = datetime(2026, 12, 3, 8, 30, tzinfo=UTC)
    keys = bucket_keys("hour", now=now, count=3)
    assert keys == ["2026-12-03T06", "2026-12-03T07", "2026-12-03T08"]
    assert window_start("hour", now=now, count=3) == datetime(2026, 12, 3, 6, tzinfo=UTC)
    assert bucket_keys("day", now=now, count=2) == ["2026-12-02", "2026-12-03"]
    rows = fill_buckets([TimelineRow("2026-12-03T07", 4, 1, 3, 3000)], keys)
    assert [row.requests for row in rows] == [0, 4, 0]
    chart = bar_chart("Requests", rows, lambda r: r.requests, lambda v: f"{v:.0f}")
    assert [bar.height for bar in chart.bars] == [0, 40.0, 0]
    assert chart.peak_text == "4" and not chart.empty
    empty = bar_chart("Requests", fill_buckets([], keys), lambda r: r.requests, str)
    assert empty.empty

"""summary.md cells: thresholds such as '<=' read as written, while hostile text cannot become
active HTML or Markdown (tags, entities, autolinks, extra table columns, extra rows)."""

from __future__ import annotations

from nnassay.reports.render import environment, md_cell


def test_comparisons_are_not_html_escaped() -> None:
    assert (
        md_cell("accuracy <= 0.05 and eps >= 0.1, a < b & c") == "accuracy <= 0.05 and eps >= 0.1, a < b & c"
    )


def test_hostile_text_stays_inert() -> None:
    text = md_cell('<img src="file:///etc/passwd"> </b> <!-- x --> <http://e.com> &lt; &#60; a|b\nc')
    assert "<img" not in text and "</b" not in text and "<!--" not in text and "<http" not in text
    assert "&lt;img" in text and "&amp;lt;" in text and "&amp;#60;" in text
    assert "a\\|b" in text and "\n" not in text


def test_summary_template_uses_the_cell_filter() -> None:
    env = environment(markdown=True)
    assert env.loader is not None
    source = env.loader.get_source(env, "summary.md.j2")[0]
    assert "{% macro cell(text) %}{{ text | md_cell }}{% endmacro %}" in source

import pytest

from pipeline.templates import missing_variables, placeholders, render


def test_placeholders_in_order_without_duplicates():
    template = "Hi {{name}}, {{ name }} from {{city}} {{ bad-name }}"
    assert placeholders(template) == ["name", "city"]


def test_render_fills_and_formats_values():
    text = render(
        "{{a}}+{{ b }}={{c}} {{ok}}", {"a": 1, "b": 2.5, "c": "x", "ok": True}
    )
    assert text == "1+2.5=x true"


def test_missing_variables_are_reported():
    assert missing_variables("{{a}} {{b}} {{c}}", {"b": 1}) == ["a", "c"]
    with pytest.raises(KeyError):
        render("{{a}}", {})


def test_braces_that_are_not_placeholders_stay():
    assert render("{x} {{ 1 }} {{y}}", {"y": "Y"}) == "{x} {{ 1 }} Y"

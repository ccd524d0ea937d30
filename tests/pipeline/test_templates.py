import pytest

from pipeline.templates import (
    TemplateTooLarge,
    missing_variables,
    placeholders,
    render,
    template_shape,
)


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


def test_the_rendered_length_is_known_before_rendering():
    template = "Dear {{name}}, {{ name }} owes {{amount}} ({{ok}})"
    variables = {"name": "Ann", "amount": 12.5, "ok": False}
    shape = template_shape(template)
    assert shape.rendered_chars(variables) == len(render(template, variables))
    assert shape.names == ("name", "amount", "ok")


def test_a_template_bomb_is_refused_without_being_rendered():
    # 40,000 placeholders x 12.5 kB = 500 MB, were it rendered.
    bomb = "{{a}}" * 40_000
    variables = {"a": "x" * 12_500}
    assert template_shape(bomb).rendered_chars(variables) == 500_000_000
    with pytest.raises(TemplateTooLarge) as error:
        render(bomb, variables, max_chars=200_000)
    assert error.value.rendered_chars == 500_000_000
    assert error.value.limit_chars == 200_000
    assert render("{{a}}", {"a": "xy"}, max_chars=2) == "xy"

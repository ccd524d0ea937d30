"""Reading input lines: both forms, and why a bad line is bad."""

import json

import pytest

from pipeline.batch.formats import LineError, parse_line, to_api_item


def _openai(custom_id="r1", **body):
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "m",
                "messages": [{"role": "user", "content": "Hi"}],
                **body,
            },
        }
    )


def test_openai_request_becomes_an_inline_item():
    line = _openai(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Ok"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello "},
                    {"type": "text", "text": "there"},
                ],
            },
        ],
        temperature=0,
        max_completion_tokens=20,
    )
    spec = parse_line(line, 1)
    assert spec.custom_id == "r1"
    assert spec.model == "m"
    assert spec.system_prompt == "Be brief.\n\nOk"
    assert spec.user_content == "Hello there"
    assert spec.temperature == 0
    assert spec.max_tokens == 20
    assert spec.prompt_id is None


def test_job_items_in_both_shapes():
    inline = parse_line(
        b'{"customId": "a", "model": "m", "systemPrompt": "s", '
        b'"userContent": "u", "maxTokens": 5}',
        1,
    )
    assert (inline.custom_id, inline.system_prompt, inline.user_content) == (
        "a",
        "s",
        "u",
    )
    assert inline.max_tokens == 5
    templated = parse_line(
        '{"model": "m", "promptId": "p", "promptVersion": 2, '
        '"variables": {"who": "Ann", "n": 3}}',
        7,
    )
    assert templated.prompt_id == "p" and templated.prompt_version == 2
    assert templated.variables == {"who": "Ann", "n": 3}
    # No custom id: the line number names it.
    assert templated.custom_id == "line-7"


def test_api_item_is_camel_case_without_empty_fields():
    spec = parse_line('{"model": "m", "userContent": "u"}', 3)
    assert to_api_item(spec) == {
        "customId": "line-3",
        "model": "m",
        "userContent": "u",
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"userContent": "x"}', "model: required"),
        ('{"model": "m"}', "give promptId (with variables) or userContent"),
        (
            '{"model": "m", "userContent": "x", "temperature": 5}',
            "temperature: Input should be less than or equal to 2",
        ),
        (
            '{"model": "m", "userContent": "x", "topP": 1}',
            "topP: unknown or unsupported field",
        ),
        (
            '{"model": "m", "promptId": "p", "systemPrompt": "s"}',
            "systemPrompt comes from the prompt",
        ),
        (_openai(url="x").replace('"/v1/chat', '"/v1/embed'), "url: Input"),
        (_openai(top_p=0.5), "body.top_p: unknown or unsupported field"),
        (
            _openai(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"},
                ]
            ),
            "multi-turn conversations cannot be batched",
        ),
        (
            _openai(messages=[{"role": "system", "content": "only"}]),
            "the last message must be the user's",
        ),
        (
            _openai(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {}}],
                    }
                ]
            ),
            "body.messages[0].content",
        ),
        (_openai(max_tokens=5, max_completion_tokens=5), "not both"),
        (_openai(custom_id=""), "custom_id: String should have at least"),
    ],
)
def test_bad_lines_say_why(line, expected):
    with pytest.raises(LineError) as raised:
        parse_line(line, 1)
    assert expected in str(raised.value)


def test_a_line_with_many_problems_names_a_few():
    line = json.dumps({"a": 1, "b": 2, "c": 3, "d": 4, "model": "m"})
    with pytest.raises(LineError) as raised:
        parse_line(line, 1)
    assert "(and " in str(raised.value)

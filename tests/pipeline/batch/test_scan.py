"""The validation pass: line numbers, catalog checks, repeats, chunks."""

import hashlib
import json

import pytest

from pipeline.batch.backend import PromptInfo
from pipeline.batch.chunks import ChunkPlanner, chunk_key, read_lines
from pipeline.batch.errors import InvalidInput
from pipeline.batch.scan import MAX_LISTED_PROBLEMS, ChunkLimits, scan_input
from pipeline.batch.unique import IdDigests, id_digest

BIG = ChunkLimits(max_items=1000, max_bytes=1 << 30)


class Catalog:
    def __init__(self, models=("m",), prompts=None):
        self.models = set(models)
        self.prompts = prompts or {}
        self.lookups = []

    def has_model(self, name):
        return name in self.models

    def prompt(self, prompt_id, version):
        self.lookups.append((prompt_id, version))
        return self.prompts.get((prompt_id, version))


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _item(custom_id, model="m", **fields):
    return json.dumps(
        {"customId": custom_id, "model": model, "userContent": "x", **fields}
    )


def test_a_valid_file_is_hashed_counted_and_chunked(tmp_path):
    path = _write(tmp_path / "in.jsonl", [_item(f"c{i}") for i in range(7)])
    reports = []
    scan = scan_input(
        path,
        Catalog(),
        ChunkLimits(max_items=3, max_bytes=1 << 20),
        lambda done, total: reports.append((done, total)),
    )
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert scan.items == 7 and scan.size == path.stat().st_size
    assert [c.items for c in scan.chunks] == [3, 3, 1]
    assert [c.first_line for c in scan.chunks] == [1, 4, 7]
    assert scan.chunks[1].key == chunk_key(scan.sha256, 1)
    assert scan.chunks[-1].end == scan.size
    assert reports[-1] == (scan.size, scan.size)


def test_bad_lines_are_named_by_number(tmp_path):
    path = _write(
        tmp_path / "in.jsonl",
        [
            _item("a"),
            "",  # blank lines are skipped but counted as lines
            "{oops",
            _item("b", model="nope"),
            _item("c", temperature=9),
            _item("d"),
        ],
    )
    with pytest.raises(InvalidInput) as raised:
        scan_input(path, Catalog(), BIG)
    error = raised.value
    assert error.count == 3
    assert [(p.line, p.message.split(":")[0]) for p in error.problems] == [
        (3, "not JSON"),
        (4, "model"),
        (5, "temperature"),
    ]
    assert "unknown or inactive model 'nope'" in error.problems[1].message
    assert "nothing was submitted" in str(error)


def test_listed_problems_are_capped_but_all_counted(tmp_path):
    path = _write(tmp_path / "in.jsonl", ["{"] * (MAX_LISTED_PROBLEMS + 5))
    with pytest.raises(InvalidInput) as raised:
        scan_input(path, Catalog(), BIG)
    assert len(raised.value.problems) == MAX_LISTED_PROBLEMS
    assert raised.value.count == MAX_LISTED_PROBLEMS + 5


def test_repeated_custom_ids_name_both_lines(tmp_path):
    lines = [_item(f"c{i}") for i in range(50)]
    lines[30] = _item("c7")
    lines.append(json.dumps({"model": "m", "userContent": "x"}))  # line-51
    lines.append(_item("line-51"))
    path = _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(InvalidInput) as raised:
        scan_input(path, Catalog(), BIG)
    messages = [str(p) for p in raised.value.problems]
    assert messages == [
        "line 31: custom id 'c7' repeats line 8",
        "line 52: custom id 'line-51' repeats line 51",
    ]


def test_prompt_items_are_checked_against_the_prompt(tmp_path):
    pid = "0123456789abcdef01234567"
    catalog = Catalog(
        prompts={
            (pid, None): PromptInfo(user_template="Hi {{who}} {{where}}"),
            (pid, 1): PromptInfo(user_template=None),
        }
    )

    def templated(custom_id, **fields):
        return json.dumps(
            {"customId": custom_id, "model": "m", "promptId": pid, **fields}
        )

    path = _write(
        tmp_path / "in.jsonl",
        [
            templated("ok", variables={"who": 1, "where": 2}),
            templated("miss", variables={"who": 1}),
            templated("v1-no-content", promptVersion=1),
            templated("v1", promptVersion=1, userContent="x"),
            templated("unknown", promptVersion=9),
            templated("both", userContent="x"),
        ],
    )
    with pytest.raises(InvalidInput) as raised:
        scan_input(path, catalog, BIG)
    assert [str(p) for p in raised.value.problems] == [
        "line 2: variables: missing: where",
        "line 3: userContent: the prompt has no user template: give "
        "userContent",
        f"line 5: promptId: unknown prompt '{pid}' version 9",
        "line 6: userContent: the prompt has a user template: give "
        "variables, not userContent",
    ]


def test_an_empty_input_is_bad(tmp_path):
    path = _write(tmp_path / "in.jsonl", ["", "  "])
    with pytest.raises(InvalidInput, match="no requests"):
        scan_input(path, Catalog(), BIG)


def test_chunks_close_on_bytes_too():
    planner = ChunkPlanner(max_items=100, max_bytes=250)
    offset = 0
    for number in range(1, 8):
        planner.add(number, offset, offset + 100)
        offset += 100
    chunks = planner.finish("ab" * 32)
    assert [(c.first_line, c.items) for c in chunks] == [
        (1, 2),
        (3, 2),
        (5, 2),
        (7, 1),
    ]
    # A line longer than the bound still gets a chunk of its own.
    planner = ChunkPlanner(max_items=100, max_bytes=10)
    planner.add(1, 0, 50)
    planner.add(2, 50, 60)
    assert [c.items for c in planner.finish("00")] == [1, 1]


def test_read_lines_of_a_byte_range(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"a\r\n\nbb\nccc\n")
    lines = list(read_lines(path))
    assert [(x.number, x.text) for x in lines] == [
        (1, b"a"),
        (3, b"bb"),
        (4, b"ccc"),
    ]
    middle = list(read_lines(path, lines[1].start, lines[1].end, 3))
    assert [(x.number, x.text) for x in middle] == [(3, b"bb")]


def test_id_digests_find_repeats_only():
    digests = IdDigests()
    for value in ["a", "b", "c", "b"]:
        digests.add(value)
    assert digests.repeated() == {id_digest("b")}

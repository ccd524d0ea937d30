"""The validation pass: one streaming read that checks every line.

Before anything is submitted the whole input is read once: each line is
parsed (:mod:`pipeline.batch.formats`), its model looked up in the
catalog, its prompt and template variables checked, its custom id
remembered as a digest (:mod:`pipeline.batch.unique`); meanwhile the
file is hashed and cut into chunks. Only counters, the digests (8 bytes
a line) and the chunk boundaries stay in memory, never the lines.

The checks mirror the service's own (``pipeline.jobs.validation``),
which still runs on every submitted job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.batch.backend import PromptInfo
from pipeline.batch.chunks import Chunk, ChunkPlanner, read_lines
from pipeline.batch.errors import InvalidInput, LineProblem
from pipeline.batch.formats import LineError, parse_line
from pipeline.batch.unique import IdDigests, id_digest
from pipeline.jobs.validation import ItemSpec
from pipeline.templates import missing_variables

#: Bad lines listed one by one; the rest are counted.
MAX_LISTED_PROBLEMS = 20
#: Lines between two progress reports.
PROGRESS_EVERY_LINES = 20_000

#: Called with (bytes read, bytes in all).
ScanProgress = Callable[[int, int], None]


class InputCatalog(Protocol):
    """What validation needs to know of the service."""

    def has_model(self, name: str) -> bool:
        """Whether ``name`` is an active model."""
        ...

    def prompt(self, prompt_id: str, version: int | None) -> PromptInfo | None:
        """The client's prompt, if it exists."""
        ...


@dataclass(frozen=True)
class ChunkLimits:
    """How large one job may be."""

    max_items: int
    max_bytes: int


@dataclass
class Scan:
    """What the validation pass found in a valid input."""

    sha256: str
    size: int
    items: int
    chunks: list[Chunk]


@dataclass
class _Problems:
    listed: list[LineProblem] = field(default_factory=list)
    count: int = 0

    def add(self, line: int, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_PROBLEMS:
            self.listed.append(LineProblem(line, message))


def scan_input(
    path: Path,
    catalog: InputCatalog,
    limits: ChunkLimits,
    on_progress: ScanProgress | None = None,
) -> Scan:
    """Check every line of the input and plan its chunks.

    Args:
        path: The input file.
        catalog: Models and prompts to check the lines against.
        limits: The largest job.
        on_progress: Told how far the read got, now and then.

    Returns:
        The input's hash, size, item count and chunks.

    Raises:
        InvalidInput: Naming the bad lines (with their numbers).
        OSError: The file cannot be read.
    """
    size = path.stat().st_size
    planner = ChunkPlanner(limits.max_items, limits.max_bytes)
    ids = IdDigests()
    problems = _Problems()
    items = 0
    for line in read_lines(path):
        try:
            spec = parse_line(line.text, line.number)
            _check(spec, catalog)
        except LineError as error:
            problems.add(line.number, str(error))
        else:
            assert spec.custom_id is not None
            ids.add(spec.custom_id)
        items += 1
        planner.add(line.number, line.start, line.end)
        if on_progress is not None and items % PROGRESS_EVERY_LINES == 0:
            on_progress(line.end, size)
    if items == 0:
        problems.add(1, "the input holds no requests")
    repeated = ids.repeated()
    if repeated:
        _report_repeats(path, repeated, problems)
    if problems.count:
        problems.listed.sort(key=lambda problem: problem.line)
        raise InvalidInput(problems.listed, problems.count)
    if on_progress is not None:
        on_progress(size, size)
    sha256 = file_sha256(path)
    return Scan(sha256, size, items, planner.finish(sha256))


def file_sha256(path: Path) -> str:
    """The hash of every byte of a file (blank lines included)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(spec: ItemSpec, catalog: InputCatalog) -> None:
    """Checks against the service's data (the model, the prompt)."""
    if not catalog.has_model(spec.model):
        raise LineError(f"model: unknown or inactive model {spec.model!r}")
    if spec.prompt_id is None:
        return
    prompt = catalog.prompt(spec.prompt_id, spec.prompt_version)
    if prompt is None:
        version = (
            f" version {spec.prompt_version}"
            if spec.prompt_version is not None
            else ""
        )
        raise LineError(
            f"promptId: unknown prompt {spec.prompt_id!r}{version}"
        )
    template = prompt.user_template
    if not template:
        if spec.user_content is None:
            raise LineError(
                "userContent: the prompt has no user template: give "
                "userContent"
            )
        return
    if spec.user_content is not None:
        raise LineError(
            "userContent: the prompt has a user template: give variables, "
            "not userContent"
        )
    missing = missing_variables(template, spec.variables or {})
    if missing:
        raise LineError("variables: missing: " + ", ".join(missing))


def _report_repeats(
    path: Path, repeated: set[int], problems: _Problems
) -> None:
    """Read the input again for the ids whose digests repeat.

    Digests may collide, so the ids themselves decide; only the few
    suspects are kept in memory.
    """
    first_seen: dict[str, int] = {}
    for line in read_lines(path):
        try:
            spec = parse_line(line.text, line.number)
        except LineError:
            continue
        custom_id = spec.custom_id
        assert custom_id is not None
        if id_digest(custom_id) not in repeated:
            continue
        first = first_seen.setdefault(custom_id, line.number)
        if first != line.number:
            problems.add(
                line.number,
                f"custom id {custom_id!r} repeats line {first}",
            )

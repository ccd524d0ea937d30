"""User templates with ``{{variable}}`` placeholders.

Rendering is strict: every placeholder needs a value, so a batch with a
missing variable is rejected before anything is stored. It is also
bounded: a template's :class:`TemplateShape` (its fixed text and how
often each placeholder occurs) gives the rendered length from the
values' lengths alone, so a template that would render to gigabytes is
refused before a byte of it is built.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

Scalar = str | int | float | bool


class TemplateTooLarge(ValueError):
    """A template would render to more than the limit allows.

    Attributes:
        rendered_chars: The length it would have.
        limit_chars: The most allowed.
    """

    def __init__(self, rendered_chars: int, limit_chars: int) -> None:
        super().__init__(
            f"renders to {rendered_chars} characters, over the limit of "
            f"{limit_chars}"
        )
        self.rendered_chars = rendered_chars
        self.limit_chars = limit_chars

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        return type(self), (self.rendered_chars, self.limit_chars)


@dataclass(frozen=True)
class TemplateShape:
    """What a template's rendered length depends on.

    Attributes:
        fixed_chars: Characters outside the placeholders.
        uses: Occurrences of each placeholder, in order of first use.
    """

    fixed_chars: int
    uses: tuple[tuple[str, int], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Variable names, in order of first use."""
        return tuple(name for name, _ in self.uses)

    def rendered_chars(self, variables: Mapping[str, object]) -> int:
        """The length of the rendered text (missing variables count 0)."""
        return self.fixed_chars + sum(
            count * len(value_text(variables[name]))
            for name, count in self.uses
            if name in variables
        )


@functools.lru_cache(maxsize=64)
def template_shape(template: str) -> TemplateShape:
    """The shape of ``template`` (cached: a job's items share theirs)."""
    counts: Counter[str] = Counter()
    placeholder_chars = 0
    for match in PLACEHOLDER.finditer(template):
        counts[match[1]] += 1
        placeholder_chars += len(match[0])
    return TemplateShape(
        len(template) - placeholder_chars, tuple(counts.items())
    )


def value_text(value: object) -> str:
    """A variable's value as rendered (booleans in lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def placeholders(template: str) -> list[str]:
    """Variable names in ``template``, in order of first use."""
    return list(template_shape(template).names)


def missing_variables(
    template: str, variables: Mapping[str, object]
) -> list[str]:
    """Placeholders of ``template`` that ``variables`` does not fill."""
    return [name for name in placeholders(template) if name not in variables]


def render(
    template: str,
    variables: Mapping[str, Scalar],
    *,
    max_chars: int | None = None,
) -> str:
    """Fill every placeholder of ``template``.

    Args:
        template: Text with ``{{name}}`` placeholders.
        variables: Values by name; numbers and booleans become text.
        max_chars: The longest result allowed, checked before rendering.

    Returns:
        The rendered text.

    Raises:
        KeyError: A placeholder has no value (names the first missing).
        TemplateTooLarge: The result would be longer than ``max_chars``.
    """
    if max_chars is not None:
        size = template_shape(template).rendered_chars(variables)
        if size > max_chars:
            raise TemplateTooLarge(size, max_chars)
    return PLACEHOLDER.sub(lambda m: value_text(variables[m[1]]), template)

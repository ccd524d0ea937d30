"""User templates with ``{{variable}}`` placeholders.

Rendering is strict: every placeholder needs a value, so a batch with a
missing variable is rejected before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

Scalar = str | int | float | bool


def placeholders(template: str) -> list[str]:
    """Variable names in ``template``, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def missing_variables(
    template: str, variables: Mapping[str, object]
) -> list[str]:
    """Placeholders of ``template`` that ``variables`` does not fill."""
    return [name for name in placeholders(template) if name not in variables]


def render(template: str, variables: Mapping[str, Scalar]) -> str:
    """Fill every placeholder of ``template``.

    Args:
        template: Text with ``{{name}}`` placeholders.
        variables: Values by name; numbers and booleans become text.

    Returns:
        The rendered text.

    Raises:
        KeyError: A placeholder has no value (names the first missing).
    """

    def value(match: re.Match[str]) -> str:
        item = variables[match[1]]
        if isinstance(item, bool):
            return "true" if item else "false"
        return str(item)

    return PLACEHOLDER.sub(value, template)

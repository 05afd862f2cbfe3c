"""What the collection's filter plugins share: checks of their numeric arguments whose
messages name the filter and the argument, and the wrapper that reports a filter's own
ValueError to Ansible as AnsibleFilterError.

The filters' functions raise their own ValueError subclass, so that they can be called and
tested as plain Python; only the function registered with Ansible converts it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def check_number(
    error: type[ValueError],
    filter_name: str,
    name: str,
    value: Any,
    minimum: float,
    integer: bool = False,
) -> float:
    """Return value as a float (an int with integer=True); raise error when it is not a
    number (a bool is not one) or is below minimum."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise error(f"{filter_name}: {name} must be {kind}, got {value!r}")
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise error(f"{filter_name}: {name} must be {kind}, got {value!r}") from None
    if number < minimum:
        raise error(f"{filter_name}: {name} must be >= {minimum}, got {value}")
    return number


def ansible_filter(function: Callable[..., Any], error: type[ValueError]) -> Callable[..., Any]:
    """function as Ansible calls a filter: its error becomes an AnsibleFilterError."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except error as exc:
            from ansible.errors import AnsibleFilterError

            raise AnsibleFilterError(str(exc)) from exc

    return run

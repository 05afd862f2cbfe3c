"""Hide credentials in text that a module returns."""

from __future__ import annotations

import re
from typing import Any

# scheme://user:password@host  ->  scheme://user:***@host  (also postgresql+asyncpg://)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?=@)")
_KEY_VALUE_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|\S+)")
MASK = "***"


def mask_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Mask URL passwords, ``password=...`` pairs and each given secret in ``text``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_VALUE_PASSWORD.sub(lambda m: m.group("head") + MASK, text)


def mask_data(data: Any, secrets: list[str] | tuple[str, ...] = ()) -> Any:
    """Apply mask_text to every string inside lists/dicts."""
    if isinstance(data, str):
        return mask_text(data, secrets)
    if isinstance(data, dict):
        return {key: mask_data(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_data(value, secrets) for value in data]
    return data


def url_passwords(values: list[str]) -> list[str]:
    """Passwords embedded in URLs among ``values`` (so they can be masked anywhere)."""
    found = []
    for value in values:
        for match in _URL_PASSWORD.finditer(value or ""):
            found.append(match.group("pw"))
    return found

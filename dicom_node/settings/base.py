"""What every settings section shares: the pydantic base model and the AE title check.

Source: DICOM PS3.5 6.2 (Value Representation AE).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

_AE_TITLE_MAX = 16


def _check_ae_title(value: str) -> str:
    """Validate an AE title (PS3.5 6.2: at most 16 characters, no backslash or control chars)."""
    stripped = value.strip()
    if not stripped or len(stripped) > _AE_TITLE_MAX or "\\" in stripped:
        raise ValueError(f"{value!r} is not a valid AE title (1-16 characters, no backslash)")
    if any(ord(ch) < 32 for ch in stripped):
        raise ValueError(f"AE title {value!r} contains control characters")
    return stripped


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

"""The handlers' name for the operator's settings, which `stampede.settings` reads and checks.

Kept so the runner and its tests keep one import; the settings themselves (fields, bounds, the one place the
environment is read) live in `stampede/settings.py`.
"""

from __future__ import annotations

from ..settings import Settings as OperatorConfig

__all__ = ["OperatorConfig"]

"""The ``tracking`` extra: dipy, imported only where upstream uses it (streamline compression, QuickBundles,
resampling), with one line naming the extra when it is missing."""
from __future__ import annotations

from runtime.errors import MissingExtraError

DIPY_MISSING = "dipy is not installed; tracking and tractometry need it: pip install 'tractseg-aot[tracking]'"


def require_dipy() -> None:
    """Raise :class:`MissingExtraError` (one line, exit 1 on the command line) when dipy cannot be imported."""
    try:
        import dipy  # noqa: F401
    except ImportError:
        raise MissingExtraError(DIPY_MISSING) from None

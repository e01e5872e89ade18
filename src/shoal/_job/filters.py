"""Built-in filters, as in FLARE: they run on the site, on task data or task results.

Their arithmetic is shoal.privacy's (the same filters every dialect uses); these
classes only give them FLARE's names and arguments and the job's ``process`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shoal._job.objects import Filter


def _params(data: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The params dict inside ``data`` (an FLModel or a plain dict) and how to put it back."""
    params = getattr(data, "params", None)
    if isinstance(params, Mapping):

        def put(new: Any) -> Any:
            data.params = new
            return data

        return params, put
    return data, lambda new: new


class _Wrapped(Filter):
    _fn: Callable[[Any], Any]

    def process(self, data: Any, task_name: str) -> Any:
        """The filtered data (its params, when it is an FLModel)."""
        params, put = _params(data)
        return put(self._fn(params))


class ExcludeVars(_Wrapped):
    """Drop the named variables from what the site sends (or receives).

    Parameters
    ----------
    exclude_vars
        Names or regular expressions (full match), or None for none.
    """

    def __init__(self, exclude_vars: Sequence[str] | str | None = None) -> None:
        from shoal.privacy import ExcludeVars as _Impl

        self.exclude_vars = exclude_vars
        names = [exclude_vars] if isinstance(exclude_vars, str) else list(exclude_vars or [])
        self._fn = _Impl(tuple(names))


class PercentilePrivacy(_Wrapped):
    """Share only the largest entries, clipped to ``[-gamma, gamma]`` (FLARE's filter).

    Parameters
    ----------
    percentile
        Entries below this percentile of magnitudes become 0.
    gamma
        The clip bound.
    """

    def __init__(self, percentile: float = 10, gamma: float = 0.01) -> None:
        from shoal.privacy import PercentilePrivacy as _Impl

        self.percentile = percentile
        self.gamma = gamma
        self._fn = _Impl(float(percentile), float(gamma))


class ModelQuantizer(Filter):
    """Quantise params to 8 or 16 bits before they leave (pair with ModelDequantizer).

    Parameters
    ----------
    quantization_type
        ``"uint8"`` or ``"uint16"``.
    """

    def __init__(self, quantization_type: str = "uint8") -> None:
        from shoal.privacy import Quantize

        self.quantization_type = quantization_type
        self._q = Quantize(8 if quantization_type == "uint8" else 16)

    def process(self, data: Any, task_name: str) -> Any:
        """The quantised params."""
        params, put = _params(data)
        return put(self._q.encode(params))


class ModelDequantizer(ModelQuantizer):
    """Undo :class:`ModelQuantizer` where the params arrive."""

    def process(self, data: Any, task_name: str) -> Any:
        """The dequantised params."""
        params, put = _params(data)
        return put(self._q.decode(params))

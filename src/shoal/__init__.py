"""shoal: define a distributed algorithm once, as a swarm; run it anywhere."""

from shoal._errors import ShoalError, ShoalWarning, SwarmValidationError
from shoal._version import __version__

__all__ = ["ShoalError", "ShoalWarning", "SwarmValidationError", "__version__"]

"""The web dashboard (docs/dashboard.md): server-rendered pages with live updates over
server-sent events and uPlot charts shipped in the package, read through one
:class:`~shoal._ui.source.Source` (a coordinator's, or simulator run folders')."""

from shoal._ui.auth import Sessions
from shoal._ui.pages import dashboard_app
from shoal._ui.source import Source

__all__ = ["Sessions", "Source", "dashboard_app"]

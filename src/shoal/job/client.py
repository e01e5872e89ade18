"""The Client API: what a training script calls (``import shoal.job.client as flare``).

FLARE's ``nvflare.client`` names and meaning: ``init()``, then ``while is_running():
model = receive(); ...; send(FLModel(params=..., metrics=...))``.
"""

from __future__ import annotations

from shoal._job.client import (
    AnalyticsDataType,
    FLModel,
    ParamsType,
    get_job_id,
    get_site_name,
    init,
    is_evaluate,
    is_running,
    is_submit_model,
    is_train,
    log,
    receive,
    send,
    system_info,
)
from shoal._public import publish as _publish

__all__ = [
    "AnalyticsDataType",
    "FLModel",
    "ParamsType",
    "get_job_id",
    "get_site_name",
    "init",
    "is_evaluate",
    "is_running",
    "is_submit_model",
    "is_train",
    "log",
    "receive",
    "send",
    "system_info",
]

_publish(__name__, globals(), __all__)

"""ECS task metadata, fetched once at start and added to every record as ``ecs``.

``ECS_CONTAINER_METADATA_URI_V4`` answers with this container's metadata, whose labels name
the cluster, the task and the task definition. One call at start (the values do not change for
the life of a task); a failure is logged and the adapter runs without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecars.observability import get_logger

TIMEOUT_SECONDS = 2.0
_LABELS = {
    "com.amazonaws.ecs.cluster": "cluster",
    "com.amazonaws.ecs.task-arn": "task_arn",
    "com.amazonaws.ecs.task-definition-family": "task_family",
    "com.amazonaws.ecs.task-definition-version": "task_revision",
    "com.amazonaws.ecs.container-name": "container_name",
}
log = get_logger("sidecars.logs.ecs")


def ecs_fields(container: Mapping[str, Any]) -> dict[str, Any]:
    """``{"ecs": {...}}`` from a v4 container metadata document; empty when nothing is known."""
    labels = container.get("Labels")
    found: dict[str, Any] = {}
    if isinstance(labels, Mapping):
        found = {key: labels[label] for label, key in _LABELS.items() if label in labels}
    if "container_name" not in found and isinstance(container.get("Name"), str):
        found["container_name"] = container["Name"]
    return {"ecs": found} if found else {}


async def fetch_ecs_metadata(uri: str, seconds: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    # Imported here: outside ECS the adapter never loads aiohttp (~0.1 s of start-up and
    # ~12 MB of memory; the admin server does without it too). It is the `ecs` extra: ECS sets
    # the variable itself, so without the extra the adapter runs on, without the fields.
    try:
        import aiohttp  # noqa: PLC0415
    except ImportError:
        missing = "aiohttp is not installed: pip install 'sidecars[ecs]'"
        log.warn("ecs_metadata_unavailable", uri=uri, error=missing)
        return {}

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(uri) as response,
        ):
            if response.status != 200:
                log.warn("ecs_metadata_unavailable", uri=uri, status=response.status)
                return {}
            document = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        log.warn("ecs_metadata_unavailable", uri=uri, error=f"{type(error).__name__}: {error}")
        return {}
    if not isinstance(document, Mapping):
        log.warn("ecs_metadata_unavailable", uri=uri, error="not a JSON object")
        return {}
    fields = ecs_fields(document)
    log.info("ecs_metadata", **fields.get("ecs", {}))
    return fields

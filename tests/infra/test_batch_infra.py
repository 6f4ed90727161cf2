"""The Batch API's Azure resources, checked offline: what the batch adapters expect is deployed.

A batch on Azure needs the files container (blob_file_store.py), the per-pool
line queue (storage_line_queue.py), the `batches` and `batch_results`
containers (cosmos_batch_store.py), the Function app's data roles on all of
them, and app settings that name them. A mismatch shows only at the first
upload or the first line run on Azure, as a 404 or a 403, so it is pinned
here against the adapters' own constants.
"""

from __future__ import annotations

from typing import Any

from spotgate.adapters.azure import cosmos_batch_store
from spotgate.adapters.azure.blob_file_store import FILES_CONTAINER
from spotgate.adapters.azure.queue_depth import batch_queue_name
from spotgate.settings import FLAT_NAMES, AzureSettings
from tests.infra.test_bicep import (
    ROLE_IDS,
    _app_settings,
    body,
    doc,
    number,
    param_default,
    render,
    resources,
    variable,
)

STORAGE = "modules/storage.bicep"
COSMOS = "modules/cosmos.bicep"
ROLES = "modules/roles.bicep"
FUNCTIONS = "modules/functions.bicep"
BLOB_CONTAINERS = "Microsoft.Storage/storageAccounts/blobServices/containers"
# Data roles that let the app create, read, list and delete blobs.
BLOB_WRITERS = {ROLE_IDS["Storage Blob Data Owner"], "ba92f5b4-2d11-453d-a403-e96b0029c9fe"}


def _containers() -> dict[str, Any]:
    return {c["name"]: c for c in variable(COSMOS, "containers")}


def test_the_batch_files_container_is_deployed_private_under_the_stores_name() -> None:
    containers = {
        render(body(r)["name"]): body(r) for r in resources(STORAGE, BLOB_CONTAINERS).values()
    }
    files = containers["batchFilesContainerName"]
    assert files["properties"]["publicAccess"] == "None"
    assert param_default(STORAGE, "batchFilesContainerName") == FILES_CONTAINER
    assert param_default(FUNCTIONS, "batchFilesContainerName") == FILES_CONTAINER
    assert AzureSettings().batch_files_container == FILES_CONTAINER
    output = doc(STORAGE)["outputs"]["batchFilesContainerName"]
    assert render(output["value"]) == "batchFilesContainer.name"


def test_the_app_is_told_where_the_batch_files_are() -> None:
    settings = _app_settings()
    assert render(settings["SPOTGATE_BATCH_FILES_ACCOUNT_URL"]) == (
        "storage.properties.primaryEndpoints.blob"
    )
    assert settings["SPOTGATE_BATCH_FILES_CONTAINER"] == "batchFilesContainerName"
    functions_params = doc("main.bicep")["modules"]["functions"]["config"]["params"]
    assert render(functions_params["batchFilesContainerName"]) == (
        "storage.outputs.batchFilesContainerName"
    )
    for name in ("SPOTGATE_BATCH_FILES_ACCOUNT_URL", "SPOTGATE_BATCH_FILES_CONTAINER"):
        assert FLAT_NAMES[name.removeprefix("SPOTGATE_").lower()][0] == "azure", name


def test_the_app_is_told_where_the_line_queues_are() -> None:
    assert render(_app_settings()["SPOTGATE_BATCH_QUEUE_ACCOUNT_URL"]) == (
        "storage.properties.primaryEndpoints.queue"
    )
    queues = resources(STORAGE, "Microsoft.Storage/storageAccounts/queueServices/queues")
    [queue] = [body(r) for r in queues.values()]
    pools = param_default(STORAGE, "pools")
    assert [queue["name"].replace("${pool}", pool) for pool in pools] == [
        batch_queue_name(pool) for pool in pools
    ]


def test_the_batch_containers_match_the_cosmos_store() -> None:
    containers = _containers()
    expected = {
        cosmos_batch_store.BATCHES_CONTAINER: (
            cosmos_batch_store.BATCHES_PARTITION_KEY,
            cosmos_batch_store.BATCHES_INDEXING_POLICY,
        ),
        cosmos_batch_store.RESULTS_CONTAINER: (
            cosmos_batch_store.RESULTS_PARTITION_KEY,
            cosmos_batch_store.RESULTS_INDEXING_POLICY,
        ),
    }
    for name, (partition_key, indexing) in expected.items():
        deployed = containers[name]
        assert deployed["partitionKey"] == partition_key, name
        assert variable(COSMOS, deployed["indexingPolicy"]) == indexing, name
        assert number(deployed["defaultTtl"]) == -1, name


def test_line_results_index_only_what_the_queries_read() -> None:
    """A result carries a whole completion: indexing it would cost on every line written."""
    indexing = variable(COSMOS, _containers()["batch_results"]["indexingPolicy"])
    assert indexing["excludedPaths"] == [{"path": "/*"}]
    assert {p["path"] for p in indexing["includedPaths"]} == {
        "/batch_id/?",
        "/index/?",
        "/succeeded/?",
    }


def test_the_app_identity_may_write_blobs_and_queue_messages_on_the_account() -> None:
    role_keys = variable(ROLES, "roles")
    granted: set[str] = set()
    for resource in resources(ROLES, "Microsoft.Authorization/roleAssignments").values():
        b = body(resource)
        if b["properties"]["principalId"] != "functionsPrincipalId" or b.get("scope") != "storage":
            continue
        key = render(b["properties"]["roleDefinitionId"]).rsplit("roles.", 1)[-1].rstrip(")")
        granted.add(role_keys[key])
    assert granted & BLOB_WRITERS, "blobs: the Batch API's files"
    assert ROLE_IDS["Storage Queue Data Contributor"] in granted, "queues: the batch lines"

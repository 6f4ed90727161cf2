"""bicep/: the Azure deployment `azd up` provisions, checked offline.

No Bicep CLI here, so two independent parsers stand in for `az bicep build`:
tree-sitter-bicep (syntax: no ERROR or MISSING node anywhere) and pycep (which
turns each file into JSON the structural tests below read). Both must accept
every file. The structural tests pin what the rest of spotgate relies on: the
scale-set layout the fleet manager finds by tag, the app settings the Function
app reads (real `Settings` fields), identity-only data access, and that no
secret reaches an output, customData or a plain app setting.

pycep's JSON, as read here: a reference to a parameter or variable is its bare
name (a string), `a.b` is a `property_accessor` operator, a function call is
`{"function": {"type": <snake_case name>, "parameters": {...}}}`, `-1` is a
`minus` operator, a looped resource is `{"loop_type", "condition", "config"}`
and a conditional one `{"condition", "config"}`; quoted object keys keep their
quotes.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tree_sitter_bicep
from pycep import BicepParser
from tree_sitter import Language, Node, Parser

from spotgate.settings import FLAT_NAMES, Settings
from tests.worker_image.test_cloud_init import PLACEHOLDERS  # the contract with cloud-init

REPO = Path(__file__).resolve().parents[2]
BICEP = REPO / "bicep"
MODULES = BICEP / "modules"
BICEP_FILES = sorted(BICEP.rglob("*.bicep"))
CLOUD_INIT = REPO / "worker_image" / "cloud-init.yaml"
PARAMETERS = BICEP / "main.parameters.json"

EXPECTED_MODULES = {
    "identities",
    "monitoring",
    "network",
    "storage",
    "cosmos",
    "keyvault",
    "functions",
    "workers",
    "roles",
    "alerts",
}

TOKEN = re.compile(r"__[A-Z][A-Z0-9_]*?__")
CUSTOM_DATA_LIMIT = 65535  # bytes of base64 Azure accepts as customData

ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Key Vault Secrets Officer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "Virtual Machine Contributor": "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Managed Identity Operator": "f1a07417-d97a-45cb-824c-7a7467783830",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
}
COSMOS = "Microsoft.DocumentDB/databaseAccounts"
COSMOS_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"
# What main.parameters.json may hold for a secret: an azd expression, never a value.
AZD_EXPRESSION = re.compile(
    r"\$\(secretOrRandomPassword \$\{AZURE_KEY_VAULT_NAME\} [a-z-]+\)|\$\{[A-Z_]+\}"
)

# (principal parameter, role, scope) that roles.bicep must grant.
REQUIRED_GRANTS = {
    ("functionsPrincipalId", "Storage Blob Data Owner", "storage"),
    ("functionsPrincipalId", "Storage Queue Data Contributor", "storage"),
    ("functionsPrincipalId", "Storage Table Data Contributor", "storage"),
    ("functionsPrincipalId", "Key Vault Secrets User", "vault"),
    ("functionsPrincipalId", "Virtual Machine Contributor", "scaleSets[i]"),
    ("functionsPrincipalId", "Monitoring Reader", "workspace"),
    ("functionsPrincipalId", "Monitoring Reader", "appInsights"),
    ("functionsPrincipalId", "Monitoring Metrics Publisher", "appInsights"),
    ("functionsPrincipalId", "Managed Identity Operator", "workersIdentity"),
    ("workersPrincipalId", "Key Vault Secrets User", "fleetTokenItem"),
    ("workersPrincipalId", "Key Vault Secrets User", "vllmApiKeyItem"),
    ("workersPrincipalId", "AcrPull", "registry"),
    ("principalId", "Key Vault Secrets Officer", "vault"),
}

REQUIRED_APP_SETTINGS = {
    "SPOTGATE_COMPUTE",
    "SPOTGATE_AZURE_SUBSCRIPTION_ID",
    "SPOTGATE_AZURE_RESOURCE_GROUP",
    "SPOTGATE_POOLS",
    "SPOTGATE_STORE_BACKEND",
    "SPOTGATE_CACHE_BACKEND",
    "SPOTGATE_COSMOS_ENDPOINT",
    "SPOTGATE_COSMOS_DATABASE",
    "SPOTGATE_BATCH_QUEUE_ACCOUNT_URL",
    "SPOTGATE_MONITOR_METRICS_ENDPOINT",
    "SPOTGATE_MONITOR_GATEWAY_RESOURCE_ID",
    "SPOTGATE_MIN_WORKERS",
    "SPOTGATE_MAX_WORKERS",
    "SPOTGATE_PUBLIC_URL",
    "SPOTGATE_ADMIN_KEY",
    "SPOTGATE_FLEET_TOKEN",
    "SPOTGATE_API_KEYS",
    "SPOTGATE_KEY_VAULT_URL",
    "AZURE_CLIENT_ID",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
}
SECRET_SETTINGS = {
    "SPOTGATE_ADMIN_KEY": "admin-key",
    "SPOTGATE_FLEET_TOKEN": "fleet-token",
    "SPOTGATE_API_KEYS": "api-keys",
    "SPILLOVER_API_KEY": "spillover-api-key",
}
KEY_VAULT_REFERENCE = re.compile(
    r"^@Microsoft\.KeyVault\(VaultName=\$\{keyVaultName\};SecretName=([a-z0-9-]+)\)$"
)

REQUIRED_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "SPOTGATE_URL",
    "AZURE_KEY_VAULT_NAME",
    "AZURE_COSMOS_ENDPOINT",
}
FORBIDDEN_IN_OUTPUTS = ("listkeys", "secret", "password", "connectionstring", "token", "key")
# Names of things that merely contain "key": the vault, not a key.
HARMLESS_IN_OUTPUTS = ("keyvault", "key_vault")


# --- reading pycep's JSON ---


@functools.cache
def doc(relative: str) -> dict[str, Any]:
    parsed: dict[str, Any] = BicepParser().parse(text=(BICEP / relative).read_text())
    return parsed


def walk(node: Any, *, skip_functions: tuple[str, ...] = ()) -> Iterator[Any]:
    """Every value in a pycep tree, dict keys included; `skip_functions` prunes calls."""
    yield node
    if isinstance(node, dict):
        function = node.get("function")
        if isinstance(function, dict) and function.get("type") in skip_functions:
            return
        for key, value in node.items():
            yield key
            yield from walk(value, skip_functions=skip_functions)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item, skip_functions=skip_functions)


def strings(node: Any, **kwargs: Any) -> set[str]:
    return {s for s in walk(node, **kwargs) if isinstance(s, str)}


def unquote(key: str) -> str:
    return key.strip("'")


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's own properties, whether it is looped, conditional or plain."""
    config: dict[str, Any] = resource["config"]
    if "loop_type" in config or ("condition" in config and "config" in config):
        inner: dict[str, Any] = config["config"]
        return inner
    return config


def condition(resource: dict[str, Any]) -> Any:
    return resource["config"].get("condition") if "config" in resource["config"] else None


def resources(relative: str, resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: r
        for name, r in doc(relative).get("resources", {}).items()
        if r["type"].lower() == resource_type.lower()
    }


def only(relative: str, resource_type: str) -> dict[str, Any]:
    found = resources(relative, resource_type)
    assert len(found) == 1, f"{relative}: expected one {resource_type}, found {sorted(found)}"
    return body(next(iter(found.values())))


def variable(relative: str, name: str) -> Any:
    return doc(relative)["variables"][name]["value"]


def param_default(relative: str, name: str) -> Any:
    return doc(relative)["parameters"][name]["default"]


def secure_params(relative: str) -> set[str]:
    return {
        name
        for name, p in doc(relative).get("parameters", {}).items()
        if any(d["type"] == "secure" for d in p["decorators"])
    }


def render(node: Any) -> str:
    """A pycep expression back as compact Bicep-ish text, for readable assertions."""
    if isinstance(node, dict) and "operator" in node:
        op, operands = node["operator"]["type"], node["operator"]["operands"]
        if op == "property_accessor":
            return f"{render(operands['operand_1'])}.{render(operands['operand_2'])}"
        if op == "index_accessor":
            return f"{render(operands['operand_1'])}[{render(operands['operand_2'])}]"
        if op == "minus" and set(operands) == {"integer_value"}:
            return f"-{operands['integer_value']}"
        return f"{op}({', '.join(render(v) for v in operands.values())})"
    if isinstance(node, dict) and "function" in node:
        params = node["function"].get("parameters") or {}
        args = ", ".join(render(v) for v in params.values() if v is not None)
        return f"{node['function']['type']}({args})"
    return node if isinstance(node, str) else json.dumps(node)


def number(node: Any) -> int:
    """pycep writes -1 as a `minus` operator."""
    if isinstance(node, int):
        return node
    operator = node["operator"]
    assert operator["type"] == "minus", node
    return -int(operator["operands"]["integer_value"])


def unwind_replacements(relative: str, node: Any) -> tuple[str, list[tuple[str, Any]]]:
    """`base64(replace(replace(loadTextContent(path), a, x), b, y))` -> (path, [(a, x), (b, y)])."""
    variables = doc(relative).get("variables", {})
    pairs: list[tuple[str, Any]] = []
    while True:
        if isinstance(node, str) and node in variables:
            node = variables[node]["value"]
            continue
        function = node.get("function", {}) if isinstance(node, dict) else {}
        if function.get("type") == "base64" and not pairs:
            node = function["parameters"]["input_string"]
            continue
        if function.get("type") == "replace":
            params = function["parameters"]
            pairs.append((params["old_string"], params["new_string"]))
            node = params["original_string"]
            continue
        if function.get("type") == "load_text_content":
            return function["parameters"]["file_path"], pairs[::-1]
        raise AssertionError(f"not loadTextContent() + replace(): {render(node)}")


# --- syntax: both offline parsers accept every file ---


def test_the_layout_is_there() -> None:
    assert (BICEP / "main.bicep").is_file() and PARAMETERS.is_file()
    assert {p.stem for p in MODULES.glob("*.bicep")} >= EXPECTED_MODULES
    assert (BICEP / "README.md").is_file()


def _syntax_errors(node: Node, source: bytes) -> Iterator[str]:
    if node.type == "ERROR" or node.is_missing:
        line, column = node.start_point
        text = source[node.start_byte : node.end_byte][:60].decode(errors="replace")
        yield f"{'MISSING' if node.is_missing else 'ERROR'} at {line + 1}:{column + 1}: {text!r}"
    for child in node.children:
        yield from _syntax_errors(child, source)


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
def test_tree_sitter_parses_without_error_or_missing_nodes(path: Path) -> None:
    source = path.read_bytes()
    tree = Parser(Language(tree_sitter_bicep.language())).parse(source)
    assert tree.root_node.child_count > 0
    assert list(_syntax_errors(tree.root_node, source)) == []
    assert not tree.root_node.has_error


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
def test_pycep_parses(path: Path) -> None:
    parsed = doc(str(path.relative_to(BICEP)))
    assert parsed.get("resources") or parsed.get("modules")


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
def test_pycep_sees_every_resource(path: Path) -> None:
    """pycep keeps only the last of several nested child resources: declare them with parent:."""
    declared = re.findall(r"^\s*resource\s+(\w+)\s", path.read_text(), re.MULTILINE)
    parsed = doc(str(path.relative_to(BICEP))).get("resources", {})
    assert sorted(declared) == sorted(parsed)


# --- main.bicep and its parameters ---


def test_main_is_subscription_scoped_and_creates_the_resource_group() -> None:
    assert doc("main.bicep")["globals"]["scope"]["value"] == "subscription"
    names = variable("main.bicep", "names")
    assert names["resourceGroup"]["operator"]["operands"]["false_value"] == "resourceGroupName"
    assert names["resourceGroup"]["operator"]["operands"]["true_value"] == "rg-${environmentName}"
    group = only("main.bicep", "Microsoft.Resources/resourceGroups")
    assert render(group["name"]) == "names.resourceGroup"
    token = variable("main.bicep", "resourceToken")
    assert render(token) == "to_lower(unique_string(subscription().id, environmentName, location))"
    overrides = {"functionAppName", "storageAccountName", "cosmosAccountName", "keyVaultName"}
    assert all(param_default("main.bicep", o) == "" for o in overrides)


def test_every_module_is_deployed_into_the_resource_group() -> None:
    modules = doc("main.bicep")["modules"]
    assert {Path(m["detail"]["path"]).stem for m in modules.values()} == EXPECTED_MODULES
    assert all(m["config"]["scope"] == "rg" for m in modules.values())
    assert "roles" in strings(modules["functions"]["config"].get("dependsOn"))


def test_every_required_parameter_is_in_main_parameters_json() -> None:
    params = doc("main.bicep")["parameters"]
    supplied = json.loads(PARAMETERS.read_text())["parameters"]
    required = {name for name, p in params.items() if p["default"] is None}
    assert required >= {"environmentName", "location", "workerSshPublicKey"}
    assert required <= set(supplied), f"not supplied: {sorted(required - set(supplied))}"
    assert set(supplied) <= set(params), f"unknown: {sorted(set(supplied) - set(params))}"
    assert supplied["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert supplied["location"]["value"] == "${AZURE_LOCATION}"
    assert supplied["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


def test_secrets_are_generated_never_written_into_the_parameters_file() -> None:
    main_secrets = secure_params("main.bicep")
    assert main_secrets == {
        "adminKey",
        "fleetToken",
        "keySalt",
        "apiKey",
        "spilloverApiKey",
        "vllmApiKey",
    }
    for name in main_secrets - {"spilloverApiKey"}:
        assert "${newGuid()}" in param_default("main.bicep", name), name
    assert param_default("main.bicep", "spilloverApiKey") == ""
    supplied = json.loads(PARAMETERS.read_text())["parameters"]
    for name in main_secrets & set(supplied):
        value = supplied[name]["value"]
        assert AZD_EXPRESSION.fullmatch(value), f"{name}: {value!r} looks like a literal"


def test_secure_parameters_flow_only_into_the_key_vault_module() -> None:
    secrets = secure_params("main.bicep")
    for name, module in doc("main.bicep")["modules"].items():
        passed = strings(module["config"]["params"], skip_functions=("empty",))
        if name == "keyVault":
            assert passed >= secrets
        else:
            assert not passed & secrets, f"module {name} receives {passed & secrets}"
    assert secure_params("modules/keyvault.bicep") == {
        "adminKey",
        "fleetToken",
        "keySalt",
        "apiKey",
        "spilloverApiKey",
        "vllmApiKey",
    }
    for relative in ("modules/functions.bicep", "modules/workers.bicep", "modules/roles.bicep"):
        assert not secure_params(relative), relative


# --- outputs: names and endpoints only ---


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(BICEP)))
def test_no_output_carries_a_secret(path: Path) -> None:
    relative = str(path.relative_to(BICEP))
    secrets = secure_params(relative)
    for name, output in doc(relative).get("outputs", {}).items():
        text = (name + " " + json.dumps(output["value"])).lower()
        for harmless in HARMLESS_IN_OUTPUTS:
            text = text.replace(harmless, "")
        leaks = [word for word in FORBIDDEN_IN_OUTPUTS if word in text]
        assert not leaks, f"{relative}: output {name} mentions {leaks}"
        assert not strings(output["value"]) & secrets, f"{relative}: output {name}"
        assert not any(d["type"] == "secure" for d in output["decorators"])
    assert "listKeys" not in path.read_text()
    assert "listSecrets" not in path.read_text()


def test_main_outputs_are_upper_snake_for_azd() -> None:
    outputs = doc("main.bicep")["outputs"]
    assert set(outputs) >= REQUIRED_OUTPUTS
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in outputs)
    assert render(outputs["AZURE_RESOURCE_GROUP"]["value"]) == "rg.name"
    assert render(outputs["SPOTGATE_URL"]["value"]) == "functions.outputs.url"


# --- the GPU worker pool ---


def _scale_sets() -> dict[str, dict[str, Any]]:
    found = resources("modules/workers.bicep", "Microsoft.Compute/virtualMachineScaleSets")
    assert found
    return found


def _priority(resource: dict[str, Any]) -> str:
    priority: str = body(resource)["properties"]["virtualMachineProfile"]["priority"]
    return priority


def _tags(resource: dict[str, Any]) -> dict[str, Any]:
    tags = body(resource)["tags"]
    assert tags["function"]["type"] == "union", "the module's tags plus the pool's own"
    return {unquote(k): v for k, v in tags["function"]["parameters"]["arg_2"].items()}


def _created_empty(resource: dict[str, Any], name: str) -> None:
    """sku: capacity 0 when the scale set is created, no capacity when it already exists."""
    sku = body(resource)["sku"]["operator"]
    assert sku["type"] == "conditional"
    check = sku["operands"]["condition"]["function"]
    assert check["type"] == "contains"
    assert check["parameters"]["container"] == "existingScaleSetNames"
    assert check["parameters"]["item_to_find"] == name
    on_update = variable("modules/workers.bicep", sku["operands"]["true_value"])
    on_create = variable("modules/workers.bicep", sku["operands"]["false_value"])
    assert on_create == {"name": "vmSize", "tier": "Standard", "capacity": 0}
    assert on_update == {"name": "vmSize", "tier": "Standard"}


def test_one_spot_scale_set_per_zone() -> None:
    spot = [r for r in _scale_sets().values() if _priority(r) == "Spot"]
    assert len(spot) == 1, "one looped declaration"
    loop = spot[0]["config"]["loop_type"]["detail"]
    assert loop["array_name"] == "zones"
    assert body(spot[0])["zones"] == [loop["item_name"]]
    # no hard-coded zones: main.bicep's workerZones (tests/infra/test_deploy_fixes.py)
    assert param_default("modules/workers.bicep", "zones") is None
    assert render(doc("main.bicep")["modules"]["workers"]["config"]["params"]["zones"]) == "zones"


def test_spot_scale_sets_are_flexible_spot_delete_uncapped_and_empty() -> None:
    for resource in _scale_sets().values():
        if _priority(resource) != "Spot":
            continue
        b = body(resource)
        profile = b["properties"]["virtualMachineProfile"]
        assert profile["evictionPolicy"] == "Delete"
        assert "scheduledEventsProfile" not in profile, "Azure refuses terminate notices on Spot"
        assert number(profile["billingProfile"]["maxPrice"]) == -1
        assert b["properties"]["orchestrationMode"] == "Flexible"
        assert b["properties"]["platformFaultDomainCount"] == 1
        _created_empty(resource, "${namePrefix}-spot-z${zone}")
        assert _tags(resource) == {"spotgate-pool": "pool", "spotgate-priority": "spot"}


def test_the_on_demand_scale_set_is_regular_priority() -> None:
    regular = [r for r in _scale_sets().values() if _priority(r) == "Regular"]
    assert len(regular) == 1
    b = body(regular[0])
    assert b["properties"]["orchestrationMode"] == "Flexible"
    assert b["properties"]["platformFaultDomainCount"] == 1
    _created_empty(regular[0], "onDemandScaleSetName")
    assert "zones" not in b, "regional: the fleet's on-demand fallback takes any zone"
    assert "evictionPolicy" not in b["properties"]["virtualMachineProfile"]
    assert _tags(regular[0]) == {"spotgate-pool": "pool", "spotgate-priority": "on-demand"}


def test_workers_log_in_with_ssh_keys_only_and_have_no_public_ip() -> None:
    linux = variable("modules/workers.bicep", "linuxConfiguration")
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"][0]["keyData"] == "sshPublicKey"
    everything = strings(doc("modules/workers.bicep"))
    assert "adminPassword" not in everything
    assert not {s for s in everything if "publicipaddress" in s.lower()}
    for resource in _scale_sets().values():
        os_profile = body(resource)["properties"]["virtualMachineProfile"]["osProfile"]
        assert os_profile["linuxConfiguration"] == "linuxConfiguration"
        assert "workerSshPublicKey" in strings(doc("main.bicep")["modules"]["workers"])
        identity = body(resource)["identity"]
        assert identity["type"] == "UserAssigned"


def test_image_and_size_are_parameters_with_an_hpc_default() -> None:
    main = doc("main.bicep")["parameters"]
    assert main["workerImagePublisher"]["default"] == "microsoft-dsvm"
    assert main["workerImageOffer"]["default"] == "ubuntu-hpc"
    assert main["workerImageSku"]["default"] == "2204"
    assert main["workerImageVersion"]["default"] == "latest"
    assert main["workerVmSize"]["default"].startswith("Standard_N")
    image = variable("modules/workers.bicep", "storageProfile")["imageReference"]
    assert image == {
        "publisher": "imagePublisher",
        "offer": "imageOffer",
        "sku": "imageSku",
        "version": "imageVersion",
    }


def test_custom_data_is_the_cloud_init_file_with_the_agreed_placeholders() -> None:
    for resource in _scale_sets().values():
        custom = body(resource)["properties"]["virtualMachineProfile"]["osProfile"]["customData"]
        assert custom["function"]["type"] == "base64"
        path, pairs = unwind_replacements("modules/workers.bicep", custom)
        assert path == "../../worker_image/cloud-init.yaml"
        assert (MODULES / path).resolve() == CLOUD_INIT
        assert [old for old, _ in pairs if old not in PLACEHOLDERS] == []
        assert {old for old, _ in pairs} == PLACEHOLDERS
        priority = dict(pairs)["__PRIORITY__"]
        assert priority == ("spot" if _priority(resource) == "Spot" else "on-demand")
        assert dict(pairs)["__KEY_VAULT_URL__"] == "keyVaultUrl"
        assert render(dict(pairs)["__AGENT_CLIENT_ID__"]) == "identity.properties.clientId"


STUB_CLOUD_INIT = "#cloud-config\nwrite_files:\n" + "".join(
    f"  - path: /etc/spotgate/{i}\n    content: '{token}'\n"
    for i, token in enumerate(sorted(PLACEHOLDERS))
)


def test_filled_custom_data_has_no_token_left_and_fits_azure(tmp_path: Path) -> None:
    """With the real cloud-init.yaml when it exists; else a stub carrying every token."""
    if CLOUD_INIT.is_file():
        text = CLOUD_INIT.read_text(encoding="utf-8")
    else:
        (tmp_path / "cloud-init.yaml").write_text(STUB_CLOUD_INIT)
        text = (tmp_path / "cloud-init.yaml").read_text()
    custom = body(next(iter(_scale_sets().values())))["properties"]["virtualMachineProfile"]
    _, pairs = unwind_replacements("modules/workers.bicep", custom["osProfile"]["customData"])
    assert set(TOKEN.findall(text)) == {old for old, _ in pairs}
    sample = {
        "__CONTROL_PLANE_URL__": "https://func-abcdefghijklm.azurewebsites.net",
        "__KEY_VAULT_URL__": "https://kv-abcdefghijklm.vault.azure.net/",
        "__FLEET_TOKEN_SECRET__": "fleet-token",
        "__POOL__": "default",
        "__MODEL__": "qwen2.5-7b-instruct",
        "__MODEL_SOURCE__": "Qwen/Qwen2.5-7B-Instruct",
        "__PRIORITY__": "on-demand",
        "__VLLM_IMAGE__": "crabcdefghijklm.azurecr.io/vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64,
        "__VLLM_KEY_SECRET__": "vllm-api-key",
        "__AGENT_CLIENT_ID__": "00000000-0000-0000-0000-000000000000",
    }
    for old, _ in pairs:
        text = text.replace(old, sample[old])
    assert not TOKEN.search(text)
    assert len(base64.b64encode(text.encode())) <= CUSTOM_DATA_LIMIT


def test_custom_data_carries_no_secret() -> None:
    custom = body(next(iter(_scale_sets().values())))["properties"]["virtualMachineProfile"]
    _, pairs = unwind_replacements("modules/workers.bicep", custom["osProfile"]["customData"])
    values = set().union(*(strings(new) for _, new in pairs))
    assert not values & (secure_params("main.bicep") | secure_params("modules/keyvault.bicep"))
    workers_params = strings(doc("main.bicep")["modules"]["workers"]["config"]["params"])
    assert not workers_params & secure_params("main.bicep")


# --- data and secrets ---


def test_storage_is_identity_only() -> None:
    account = only("modules/storage.bicep", "Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowSharedKeyAccess"] is False
    assert account["properties"]["allowBlobPublicAccess"] is False
    assert account["properties"]["minimumTlsVersion"] == "TLS1_2"
    resource_types = {r["type"] for r in doc("modules/storage.bicep")["resources"].values()}
    for service in ("blobServices", "queueServices", "tableServices"):
        assert f"Microsoft.Storage/storageAccounts/{service}" in resource_types
    assert "Microsoft.Storage/storageAccounts/blobServices/containers" in resource_types
    queue = only("modules/storage.bicep", "Microsoft.Storage/storageAccounts/queueServices/queues")
    assert queue["name"] == "spotgate-batch-${pool}"
    assert param_default("modules/storage.bicep", "pools") == ["default"]


def test_cosmos_is_serverless_entra_only_with_the_spotgate_containers() -> None:
    account = only("modules/cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts")
    assert account["properties"]["disableLocalAuth"] is True
    assert {"name": "EnableServerless"} in account["properties"]["capabilities"]
    assert param_default("modules/cosmos.bicep", "databaseName") == "spotgate"
    containers = {c["name"]: c for c in variable("modules/cosmos.bicep", "containers")}
    assert {name: c["partitionKey"] for name, c in containers.items()} == {
        "cache": "/id",
        "workers": "/pool",
        "journal": "/pool",
        "keys": "/id",
        "usage": "/key_id",
        "limits": "/id",
        "batches": "/id",
        "batch_results": "/batch_id",
    }
    for name in ("cache", "limits"):
        assert number(containers[name]["defaultTtl"]) == -1, name
        not_indexed = variable("modules/cosmos.bicep", containers[name]["indexingPolicy"])
        assert not_indexed["excludedPaths"] == [{"path": "/*"}], name
        assert not_indexed["includedPaths"] == [], name
    assert containers["journal"]["defaultTtl"] == "journalTtlSeconds"
    assert param_default("modules/cosmos.bicep", "journalTtlSeconds") == 7 * 24 * 3600
    looped = only("modules/cosmos.bicep", f"{COSMOS}/sqlDatabases/containers")
    assert render(looped["properties"]["resource"]["defaultTtl"]) == "c.defaultTtl"


def test_cosmos_containers_match_the_stores_that_read_them() -> None:
    """The partition keys and indexing the Cosmos adapters create locally are what Bicep deploys."""
    stores = pytest.importorskip("spotgate.adapters.azure.stores")
    tenancy = pytest.importorskip("spotgate.adapters.azure.cosmos_tenancy")
    batches = pytest.importorskip("spotgate.adapters.azure.cosmos_batch_store")
    containers = {c["name"]: c for c in variable("modules/cosmos.bicep", "containers")}
    expected = {
        stores.WORKERS_CONTAINER: (stores.WORKERS_PARTITION_KEY, stores.WORKERS_INDEXING_POLICY),
        stores.JOURNAL_CONTAINER: (stores.JOURNAL_PARTITION_KEY, stores.JOURNAL_INDEXING_POLICY),
        stores.CACHE_CONTAINER: (stores.CACHE_PARTITION_KEY, stores.CACHE_INDEXING_POLICY),
        tenancy.KEYS_CONTAINER: (tenancy.KEYS_PARTITION_KEY, tenancy.KEYS_INDEXING_POLICY),
        tenancy.USAGE_CONTAINER: (tenancy.USAGE_PARTITION_KEY, tenancy.USAGE_INDEXING_POLICY),
        tenancy.LIMITS_CONTAINER: (tenancy.LIMITS_PARTITION_KEY, tenancy.LIMITS_INDEXING_POLICY),
        batches.BATCHES_CONTAINER: (batches.BATCHES_PARTITION_KEY, batches.BATCHES_INDEXING_POLICY),
        batches.RESULTS_CONTAINER: (batches.RESULTS_PARTITION_KEY, batches.RESULTS_INDEXING_POLICY),
    }
    assert set(expected) == set(containers), "every deployed container has a store, and back"
    for name, (partition_key, indexing) in expected.items():
        assert containers[name]["partitionKey"] == partition_key, name
        deployed = variable("modules/cosmos.bicep", containers[name]["indexingPolicy"])
        assert deployed == indexing, name
        ttl = containers[name]["defaultTtl"]
        assert ttl == "journalTtlSeconds" or number(ttl) == -1, "TTL on: items' own ttl apply"


def test_cosmos_data_plane_roles_are_assigned_in_the_cosmos_module() -> None:
    found = resources("modules/cosmos.bicep", f"{COSMOS}/sqlRoleAssignments")
    principals = {}
    for resource in found.values():
        b = body(resource)
        assert b["name"]["function"]["type"] == "guid"
        definition = b["properties"]["roleDefinitionId"]
        assert definition.endswith("/sqlRoleDefinitions/${dataContributorRoleId}")
        principals[b["properties"]["principalId"]] = condition(resource)
    assert variable("modules/cosmos.bicep", "dataContributorRoleId") == COSMOS_DATA_CONTRIBUTOR
    assert principals["functionsPrincipalId"] is None
    assert render(principals["principalId"]) == "not(empty(principalId))"
    assert "sqlRoleAssignments" in (MODULES / "roles.bicep").read_text(), "the pointer comment"


def test_key_vault_uses_rbac_and_holds_the_generated_secrets() -> None:
    vault = only("modules/keyvault.bicep", "Microsoft.KeyVault/vaults")
    assert vault["properties"]["enableRbacAuthorization"] is True
    assert vault["properties"]["enableSoftDelete"] is True
    purge = vault["properties"]["enablePurgeProtection"]["operator"]["operands"]
    assert purge["condition"] == "enablePurgeProtection"
    secrets = {
        body(r)["name"]: body(r)["properties"]["value"]
        for r in resources("modules/keyvault.bicep", "Microsoft.KeyVault/vaults/secrets").values()
    }
    assert secrets["admin-key"] == "adminKey"
    assert secrets["fleet-token"] == "fleetToken"
    assert secrets["key-salt"] == "keySalt"
    assert render(secrets["api-keys"]) == 'string(["apiKey"])', "a JSON list"
    assert secrets["spillover-api-key"] == "spilloverApiKey"


def test_app_insights_takes_entra_id_telemetry_only() -> None:
    insights = only("modules/monitoring.bicep", "Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True
    assert (
        insights["properties"]["WorkspaceResourceId"] == "workspace.id"
        or render(insights["properties"]["WorkspaceResourceId"]) == "workspace.id"
    )


# --- network ---


def test_workers_accept_only_the_gateway_on_vllm() -> None:
    nsg = only("modules/network.bicep", "Microsoft.Network/networkSecurityGroups")
    rules = [r["properties"] | {"name": r["name"]} for r in nsg["properties"]["securityRules"]]
    inbound = [r for r in rules if r["direction"] == "Inbound"]
    allows = [r for r in inbound if r["access"] == "Allow"]
    assert [r["sourceAddressPrefix"] for r in allows] == ["functionsSubnetPrefix"]
    assert allows[0]["destinationPortRanges"] == "workerInboundPorts"
    assert param_default("modules/network.bicep", "workerInboundPorts") == ["8000"]
    denies = {r["sourceAddressPrefix"]: r for r in inbound if r["access"] == "Deny"}
    assert {"Internet", "VirtualNetwork"} <= set(denies)
    for deny in denies.values():
        assert deny["destinationPortRange"] == "*" and deny["protocol"] == "*"
        assert deny["priority"] > max(a["priority"] for a in allows)


def test_subnets_delegation_and_nsg() -> None:
    vnet = only("modules/network.bicep", "Microsoft.Network/virtualNetworks")
    subnets = {s["name"]: s["properties"] for s in vnet["properties"]["subnets"]}
    assert set(subnets) == {
        "functionsSubnetName",
        "workersSubnetName",
        "privateEndpointsSubnetName",
    }
    assert variable("modules/network.bicep", "functionsSubnetName") == "snet-functions"
    assert variable("modules/network.bicep", "workersSubnetName") == "snet-workers"
    assert variable("modules/network.bicep", "privateEndpointsSubnetName") == (
        "snet-private-endpoints"
    )
    assert "delegations" not in subnets["privateEndpointsSubnetName"], "endpoints need none"
    delegations = subnets["functionsSubnetName"]["delegations"]
    assert [d["properties"]["serviceName"] for d in delegations] == ["Microsoft.App/environments"]
    assert render(subnets["workersSubnetName"]["networkSecurityGroup"]["id"]) == "workersNsg.id"


# --- the Function app ---


def _app_settings() -> dict[str, Any]:
    settings = variable("modules/functions.bicep", "baseSettings") + variable(
        "modules/functions.bicep", "spilloverSettings"
    )
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {s["name"]: s["value"] for s in settings}


def test_function_app_is_flex_consumption_python_with_identity_and_vnet() -> None:
    plan = only("modules/functions.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = only("modules/functions.bicep", "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    tags = site["tags"]["function"]["parameters"]["arg_2"]
    assert {unquote(k): v for k, v in tags.items()} == {"azd-service-name": "api"}
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["virtualNetworkSubnetId"] == "subnetId"
    assert render(props["keyVaultReferenceIdentity"]) == "identity.id"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["type"] == "UserAssignedIdentity"
    scale = config["scaleAndConcurrency"]
    assert scale["alwaysReady"] == [{"name": "durable", "instanceCount": "durableAlwaysReady"}]
    assert param_default("modules/functions.bicep", "durableAlwaysReady") == 1
    assert scale["instanceMemoryMB"] == "instanceMemoryMB"
    assert "baseSettings" in strings(props["siteConfig"]["appSettings"])


def test_app_settings_are_complete_and_identity_based() -> None:
    settings = _app_settings()
    assert set(settings) >= REQUIRED_APP_SETTINGS
    assert "AzureWebJobsStorage" not in settings, "no connection string: identity only"
    assert "FUNCTIONS_WORKER_RUNTIME" not in settings, "Flex Consumption rejects it"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert render(settings["AZURE_CLIENT_ID"]) == "identity.properties.clientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "Authorization=AAD;ClientId=${identity.properties.clientId}"
    )
    assert settings["SPOTGATE_COMPUTE"] == "azure"
    assert settings["SPOTGATE_STORE_BACKEND"] == settings["SPOTGATE_CACHE_BACKEND"] == "cosmos"
    assert render(settings["SPOTGATE_POOLS"]) == "string(pools)", "a JSON list"
    assert settings["SPOTGATE_PUBLIC_URL"] == "https://${functionAppName}.azurewebsites.net"
    assert settings["SPOTGATE_MONITOR_METRICS_ENDPOINT"] == (
        "https://${normalizedLocation}.metrics.monitor.azure.com"
    )
    assert render(settings["SPOTGATE_MONITOR_GATEWAY_RESOURCE_ID"]) == "appInsights.id"
    assert render(settings["SPOTGATE_MIN_WORKERS"]) == "string(minWorkers)"
    functions_params = doc("main.bicep")["modules"]["functions"]["config"]["params"]
    assert functions_params["minWorkers"] == "minWorkers"
    assert functions_params["maxWorkers"] == "maxWorkers"


def test_worker_registrations_are_confined_to_the_workers_subnet() -> None:
    """Without it the app would accept only loopback workers, or (worse) any address."""
    settings = _app_settings()
    assert render(settings["SPOTGATE_WORKER_NETWORKS"]) == "string(workerNetworks)"
    functions_params = doc("main.bicep")["modules"]["functions"]["config"]["params"]
    assert json.dumps(functions_params["workerNetworks"]).count("workersSubnetPrefix") == 1
    outputs = doc("modules/network.bicep")["outputs"]
    assert "workersSubnetPrefix" in json.dumps(outputs["workersSubnetPrefix"])


def test_secrets_reach_the_app_only_as_key_vault_references() -> None:
    settings = _app_settings()
    vault_secrets = {
        body(r)["name"]
        for r in resources("modules/keyvault.bicep", "Microsoft.KeyVault/vaults/secrets").values()
    }
    for name, secret in SECRET_SETTINGS.items():
        match = KEY_VAULT_REFERENCE.match(settings[name])
        assert match and match.group(1) == secret, f"{name}: {settings[name]!r}"
        assert secret in vault_secrets
    secret_names = secure_params("main.bicep") | secure_params("modules/keyvault.bicep")
    for name, value in settings.items():
        assert not strings(value) & secret_names, name
        if name not in SECRET_SETTINGS:
            assert "@Microsoft.KeyVault(" not in json.dumps(value), name


def test_the_app_reads_its_vault_by_url_and_entra_admin_tokens_are_opt_in() -> None:
    """The SecretStore reads Key Vault itself (a rotation needs no restart); Entra ID is opt-in."""
    settings = _app_settings()
    assert render(settings["SPOTGATE_KEY_VAULT_URL"]) == "vault.properties.vaultUri"
    vault = resources("modules/functions.bicep", "Microsoft.KeyVault/vaults")
    assert [r["existing"] for r in vault.values()] == [True]
    assert body(next(iter(vault.values())))["name"] == "keyVaultName"
    for setting, param in (
        ("SPOTGATE_ENTRA_TENANT_ID", "entraTenantId"),
        ("SPOTGATE_ENTRA_ADMIN_AUDIENCE", "entraAdminAudience"),
    ):
        assert settings[setting] == param
        assert param_default("modules/functions.bicep", param) == ""
        assert param_default("main.bicep", param) == ""
        assert doc("main.bicep")["modules"]["functions"]["config"]["params"][param] == param
    supplied = json.loads(PARAMETERS.read_text())["parameters"]
    assert supplied["entraTenantId"]["value"] == "${SPOTGATE_ENTRA_TENANT_ID}"
    assert supplied["entraAdminAudience"]["value"] == "${SPOTGATE_ENTRA_ADMIN_AUDIENCE}"
    assert supplied["keySalt"]["value"] == (
        "$(secretOrRandomPassword ${AZURE_KEY_VAULT_NAME} key-salt)"
    )


# SPOTGATE_ app settings that are not Settings fields, each with where it is read; any other
# unknown name fails. tests/infra/test_deploy_fixes.py checks the reader reads it.
NOT_SETTINGS_FIELDS = {
    # the Durable blueprint, while the app is indexed (the timer's run_on_startup)
    "SPOTGATE_WATCHDOG_RUN_ON_STARTUP": "functions/spotgate/orchestrations/blueprint.py",
}


def test_spotgate_app_settings_are_real_settings_fields() -> None:
    """A renamed or removed Settings field breaks this, not the deployed app."""
    fields = set(Settings.model_fields) | set(FLAT_NAMES)
    prefix = Settings.model_config["env_prefix"]
    assert prefix == "SPOTGATE_"
    spotgate = [name for name in _app_settings() if name.startswith(prefix)]
    assert spotgate
    unknown = [name for name in spotgate if name.removeprefix(prefix).lower() not in fields]
    assert set(unknown) <= set(NOT_SETTINGS_FIELDS), unknown
    for name in NOT_SETTINGS_FIELDS:
        assert name.removeprefix(prefix).lower() not in fields, f"{name} is a field now"


# --- roles ---


def _role_assignments(relative: str) -> dict[str, dict[str, Any]]:
    return resources(relative, "Microsoft.Authorization/roleAssignments")


def test_all_role_assignments_are_in_roles_bicep() -> None:
    for path in BICEP_FILES:
        relative = str(path.relative_to(BICEP))
        if relative != "modules/roles.bicep":
            assert not _role_assignments(relative), relative
    assert _role_assignments("modules/roles.bicep")


def test_roles_bicep_grants_every_required_role_with_guid_names() -> None:
    role_keys = variable("modules/roles.bicep", "roles")
    assert set(ROLE_IDS.values()) <= set(role_keys.values())
    role_by_id = {guid: name for name, guid in ROLE_IDS.items()}
    grants = set()
    for name, resource in _role_assignments("modules/roles.bicep").items():
        b = body(resource)
        assert b["name"]["function"]["type"] == "guid", name
        definition = render(b["properties"]["roleDefinitionId"])
        scope = render(b["scope"]) if "scope" in b else "resourceGroup"
        if definition == "fleetReaderRole[i].id":  # the custom read-only role (test_deploy_fixes)
            grants.add((b["properties"]["principalId"], "spotgate fleet reader", scope))
            assert b["properties"]["principalType"] == "ServicePrincipal", name
            continue
        key = re.fullmatch(
            r"subscription_resource_id\(Microsoft\.Authorization/roleDefinitions, roles\.(\w+)\)",
            definition,
        )
        assert key, f"{name}: {definition}"
        guid = role_keys[key.group(1)]
        grants.add((b["properties"]["principalId"], role_by_id.get(guid, guid), scope))
        if b["properties"]["principalId"] == "principalId":
            assert render(condition(resource)) == "not(empty(principalId))", name
        else:
            assert b["properties"]["principalType"] == "ServicePrincipal", name
    missing = REQUIRED_GRANTS - grants
    assert not missing, f"missing grants: {sorted(missing)}"


def test_vm_contributor_covers_each_scale_set_by_default_or_the_group() -> None:
    """Least privilege by default; the group-wide role is the documented fallback."""
    existing = resources("modules/roles.bicep", "Microsoft.Compute/virtualMachineScaleSets")
    assert [r["existing"] for r in existing.values()] == [True]
    assert next(iter(existing.values()))["config"]["loop_type"]["detail"]["array_name"] == (
        "workerScaleSetNames"
    )
    names = doc("main.bicep")["modules"]["roles"]["config"]["params"]["workerScaleSetNames"]
    assert render(names) == (
        "concat(workers.outputs.spotScaleSetNames, workers.outputs.onDemandScaleSetNames)"
    )
    assert param_default("modules/roles.bicep", "computeRoleScope") == "scaleSets"
    assert param_default("main.bicep", "computeRoleScope") == "scaleSets"

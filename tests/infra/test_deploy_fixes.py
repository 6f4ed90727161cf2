"""The deployment's fixes, each held by a test that fails when the fix is undone.

Static like test_bicep.py (whose pycep helpers these reuse), plus the azd hooks and the
workers' vLLM start script run for real against fake `az`, `azd`, `curl`, `docker` and
`nvidia-smi` that answer as each test says and record how they were called.

1. Flex Consumption HTTP concurrency per instance       7. private endpoints, Key Vault public
2. a re-provision keeps the scale sets' capacity        8. least privilege
3. host.json (Durable polling, logs), watchdog          9. workers: vLLM key, pinned image, driver
4. api-keys written once                                10. postdown removes the Activity Log export
5. zones from a parameter, checked                      11. CORS setting
6. azure.yaml hooks fail, sh and pwsh                   and the README's "Deploy to Azure"
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.test_bicep import (
    BICEP,
    MODULES,
    PARAMETERS,
    REPO,
    _app_settings,
    body,
    condition,
    doc,
    only,
    param_default,
    render,
    resources,
    strings,
    variable,
)

HOOKS = BICEP / "hooks"
HOST_JSON = REPO / "functions" / "host.json"
AZURE_YAML = REPO / "azure.yaml"
README = REPO / "README.md"
CLOUD_INIT = REPO / "worker_image" / "cloud-init.yaml"
BLUEPRINT = REPO / "functions" / "spotgate" / "orchestrations" / "blueprint.py"
VMSS = "Microsoft.Compute/virtualMachineScaleSets"
# vCPUs of the sizes the README's quota numbers are written for.
VCPUS = {"Standard_NC24ads_A100_v4": 24}

# Every deploy knob: main.bicep parameter -> the azd environment variable that sets it.
KNOBS = {
    "model": "SPOTGATE_MODEL",
    "modelSource": "SPOTGATE_MODEL_SOURCE",
    "vllmImage": "SPOTGATE_VLLM_IMAGE",
    "workerVmSize": "SPOTGATE_WORKER_VM_SIZE",
    "workerZones": "SPOTGATE_ZONES",
    "minWorkers": "SPOTGATE_MIN_WORKERS",
    "maxWorkers": "SPOTGATE_MAX_WORKERS",
    "deployOnDemand": "SPOTGATE_DEPLOY_ON_DEMAND",
    "computeRoleScope": "SPOTGATE_COMPUTE_ROLE_SCOPE",
    "httpPerInstanceConcurrency": "SPOTGATE_HTTP_PER_INSTANCE_CONCURRENCY",
    "corsAllowedOrigins": "SPOTGATE_CORS_ALLOWED_ORIGINS",
    "privateNetworking": "SPOTGATE_PRIVATE_NETWORKING",
    "vllmApiKeyRequired": "SPOTGATE_VLLM_API_KEY_REQUIRED",
}
# Set by the preprovision hook, not by hand.
HOOK_SET = {
    "existingScaleSets": "SPOTGATE_EXISTING_SCALE_SETS",
    "apiKeysSecretExists": "SPOTGATE_API_KEYS_SECRET_EXISTS",
}


def supplied() -> dict[str, Any]:
    parameters: dict[str, Any] = json.loads(PARAMETERS.read_text())["parameters"]
    return parameters


def main_param(name: str) -> dict[str, Any]:
    parameter: dict[str, Any] = doc("main.bicep")["parameters"][name]
    return parameter


def module_params(module: str) -> dict[str, Any]:
    params: dict[str, Any] = doc("main.bicep")["modules"][module]["config"]["params"]
    return params


def description(relative: str, name: str) -> str:
    for decorator in doc(relative)["parameters"][name]["decorators"]:
        if decorator["type"] == "description":
            return str(decorator["argument"])
    return ""


def deploy_section() -> str:
    text = README.read_text()
    start = text.index("## Deploy to Azure")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def seconds(span: str) -> float:
    hours, minutes, secs = (float(part) for part in span.split(":"))
    return timedelta(hours=hours, minutes=minutes, seconds=secs).total_seconds()


# --- fakes for the hooks and the start script ------------------------------------------

FAKE = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"cmd": name, "args": args, "stdin": stdin}}) + "\\n")
rules = json.load(open(os.environ["FAKE_RULES"])).get(name, [])
line = " ".join(args)
for rule in rules:
    if all(part in line for part in rule["match"]):
        sys.stdout.write(rule.get("out", ""))
        sys.stderr.write(rule.get("err", ""))
        sys.exit(rule.get("rc", 0))
sys.exit(0)
"""


class Fakes:
    """A bin/ of fake commands; `rule(cmd, *parts, out=, rc=)` says how one answers."""

    def __init__(self, tmp_path: Path, commands: tuple[str, ...]) -> None:
        self.dir = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        self.rules_file = tmp_path / "rules.json"
        self.rules: dict[str, list[dict[str, Any]]] = {}
        for command in commands:
            path = self.bin / command
            path.write_text(FAKE.format(python=sys.executable))
            path.chmod(path.stat().st_mode | stat.S_IEXEC)

    def rule(self, command: str, *match: str, out: str = "", rc: int = 0, err: str = "") -> None:
        self.rules.setdefault(command, []).append(
            {"match": list(match), "out": out, "rc": rc, "err": err}
        )

    def run(
        self, shell: str, script: Path, env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        self.rules_file.write_text(json.dumps(self.rules))
        full_env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "FAKE_LOG": str(self.log),
            "FAKE_RULES": str(self.rules_file),
            "HOME": str(self.dir),
            **env,
        }
        return subprocess.run(
            [shell, str(script)], env=full_env, capture_output=True, text=True, timeout=60
        )

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        every = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [c for c in every if command is None or c["cmd"] == command]

    def env_set(self) -> dict[str, str]:
        """What the hook stored with `azd env set NAME VALUE`."""
        stored = {}
        for call in self.calls("azd"):
            if call["args"][:2] == ["env", "set"]:
                assert len(call["args"]) == 4, f"azd env set takes NAME VALUE: {call['args']}"
                stored[call["args"][2]] = call["args"][3]
        return stored


HOOK_ENV = {
    "AZURE_ENV_NAME": "sg-dev",
    "AZURE_LOCATION": "eastus",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "SPOTGATE_WORKER_SSH_PUBLIC_KEY": "ssh-ed25519 AAAA test",
}


@pytest.fixture
def hook(tmp_path: Path) -> Fakes:
    fakes = Fakes(tmp_path, ("az", "azd"))
    fakes.rule("az", "provider show", out="Registered\n")
    fakes.rule("az", "group exists", out="false\n")
    return fakes


# =========================================================================================
# 1. Flex Consumption: HTTP concurrency per instance
# =========================================================================================


def test_the_function_app_sets_http_concurrency_per_instance() -> None:
    """Python's default on Flex is 1: one SSE stream would take a whole instance."""
    site = only("modules/functions.bicep", "Microsoft.Web/sites")
    scale = site["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale["triggers"] == {"http": {"perInstanceConcurrency": "httpPerInstanceConcurrency"}}
    for relative in ("main.bicep", "modules/functions.bicep"):
        value = param_default(relative, "httpPerInstanceConcurrency")
        assert 16 <= value <= 64, f"{relative}: {value}"
    assert param_default("main.bicep", "httpPerInstanceConcurrency") == param_default(
        "modules/functions.bicep", "httpPerInstanceConcurrency"
    )
    assert module_params("functions")["httpPerInstanceConcurrency"] == (
        "httpPerInstanceConcurrency"
    )
    text = (MODULES / "functions.bicep").read_text()
    assert "Python's default on" in text and "Flex is 1" in text, "the justification"
    assert "admission queue is per" in text and "shared counters in Cosmos DB" in text


def test_the_readme_says_how_admission_and_limits_behave_across_instances() -> None:
    section = deploy_section()
    value = param_default("main.bicep", "httpPerInstanceConcurrency")
    assert f"`httpPerInstanceConcurrency` ({value})" in section
    assert "admission queue is per instance" in section
    assert "shared counters" in section and "exact across instances" in section


# =========================================================================================
# 2. A re-provision keeps the scale sets' capacity
# =========================================================================================


def _capacity_sent(resource: dict[str, Any], existing: bool) -> Any:
    """The sku.capacity ARM gets for this scale set, when it exists already or not."""
    sku = body(resource)["sku"]
    if "operator" not in sku:
        return sku.get("capacity")
    operands = sku["operator"]["operands"]
    chosen = operands["true_value"] if existing else operands["false_value"]
    chosen = variable("modules/workers.bicep", chosen) if isinstance(chosen, str) else chosen
    return chosen.get("capacity")


def test_an_existing_scale_set_is_updated_without_capacity() -> None:
    scale_sets = resources("modules/workers.bicep", VMSS)
    assert len(scale_sets) == 2
    for name, resource in scale_sets.items():
        assert _capacity_sent(resource, existing=True) is None, f"{name} resets running workers"
        assert _capacity_sent(resource, existing=False) == 0, f"{name} is created empty"
        check = body(resource)["sku"]["operator"]["operands"]["condition"]["function"]
        assert check["parameters"]["container"] == "existingScaleSetNames"
    names = {render(body(r)["name"]) for r in scale_sets.values()}
    assert names == {"${namePrefix}-spot-z${zone}", "onDemandScaleSetName"}
    assert variable("modules/workers.bicep", "onDemandScaleSetName") == "${namePrefix}-ondemand"


def test_the_existing_scale_sets_come_from_the_preprovision_hook() -> None:
    assert param_default("main.bicep", "existingScaleSets") == ""
    assert module_params("workers")["existingScaleSetNames"] == "existingScaleSetNames"
    parsed = render(variable("main.bicep", "existingScaleSetNames"))
    assert "existingScaleSets" in parsed and "none" in parsed
    assert supplied()["existingScaleSets"]["value"] == "${SPOTGATE_EXISTING_SCALE_SETS}"


def test_preprovision_lists_the_scale_sets_that_exist(hook: Fakes) -> None:
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["group exists"]]
    hook.rule("az", "group exists", "rg-sg-dev", out="true\n")
    hook.rule("az", "vmss list", "rg-sg-dev", out="vmss-default-spot-z1\nvmss-default-ondemand\n")
    hook.rule("az", "keyvault list", out="0\n")
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode == 0, done.stderr
    assert hook.env_set()["SPOTGATE_EXISTING_SCALE_SETS"] == (
        "vmss-default-spot-z1,vmss-default-ondemand"
    )


def test_preprovision_on_a_first_deployment_says_none_exist(hook: Fakes) -> None:
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode == 0, done.stderr
    assert hook.env_set()["SPOTGATE_EXISTING_SCALE_SETS"] == "none"
    assert not hook.calls("az") or all("vmss" not in c["args"] for c in hook.calls("az"))


def test_preprovision_stops_when_it_cannot_list_the_scale_sets(hook: Fakes) -> None:
    """Guessing 'none' would send capacity 0 to scale sets that run workers."""
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["group exists"]]
    hook.rule("az", "group exists", out="true\n")
    hook.rule("az", "vmss list", rc=1, err="AuthorizationFailed")
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode != 0
    assert "SPOTGATE_EXISTING_SCALE_SETS" not in hook.env_set()
    assert "capacity 0" in done.stderr


def test_preprovision_stops_when_it_cannot_tell_whether_the_group_exists(hook: Fakes) -> None:
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["group exists"]]
    hook.rule("az", "group exists", rc=1, err="Please run 'az login'")
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode != 0
    assert "SPOTGATE_EXISTING_SCALE_SETS" not in hook.env_set()


def test_the_readme_says_what_a_reprovision_touches() -> None:
    section = deploy_section()
    assert "What a re-provision touches" in section
    assert "sku.capacity" in section and "running workers" in section
    assert "re-applies `capacity: 0`" not in section, "the old known limit is fixed"


# =========================================================================================
# 3. host.json and the watchdog
# =========================================================================================


def test_durable_polls_its_queues_at_least_every_10_seconds() -> None:
    host = json.loads(HOST_JSON.read_text())
    provider = host["extensions"]["durableTask"]["storageProvider"]
    assert seconds(provider["maxQueuePollingInterval"]) <= 10


def test_durable_and_host_trigger_logs_are_warnings_only() -> None:
    levels = json.loads(HOST_JSON.read_text())["logging"]["logLevel"]
    for category in (
        "DurableTask.Core",
        "DurableTask.AzureStorage",
        "Host.Triggers.DurableTask",
        "Function",
    ):
        assert levels[category] == "Warning", category
    assert not any(
        level not in ("Warning", "Error", "Critical", "None")
        for category, level in levels.items()
        if category.startswith("DurableTask")
    )


def test_the_access_lines_still_reach_application_insights() -> None:
    """The alerts read the gateway's JSON access line (INFO) from `traces`: keep that one."""
    levels = json.loads(HOST_JSON.read_text())["logging"]["logLevel"]
    azure_host = (REPO / "functions" / "spotgate" / "hosts" / "azure.py").read_text()
    http_function = re.search(r'^HTTP_FUNCTION_NAME = "(\w+)"$', azure_host, re.M)
    assert http_function
    assert levels[f"Function.{http_function.group(1)}.User"] == "Information"


def test_the_deployed_watchdog_does_not_run_on_startup() -> None:
    settings = _app_settings()
    assert settings["SPOTGATE_WATCHDOG_RUN_ON_STARTUP"] == "false"
    assert 'WATCHDOG_RUN_ON_STARTUP_SETTING = "SPOTGATE_WATCHDOG_RUN_ON_STARTUP"' in (
        BLUEPRINT.read_text()
    )


@pytest.mark.parametrize(("value", "expected"), [("false", False), (None, True), ("1", True)])
def test_the_watchdog_timer_is_indexed_as_the_setting_says(
    value: str | None, expected: bool
) -> None:
    """What the Functions host gets when it indexes the app with that app setting."""
    env = {k: v for k, v in os.environ.items() if k != "SPOTGATE_WATCHDOG_RUN_ON_STARTUP"}
    if value is not None:
        env["SPOTGATE_WATCHDOG_RUN_ON_STARTUP"] = value
    env["PYTHONPATH"] = str(REPO / "functions")
    program = (
        "import json, azure.functions as func\n"
        "from spotgate.orchestrations import blueprint\n"
        "app = func.FunctionApp()\n"
        "app.register_functions(blueprint.bp)\n"
        "[w] = [f for f in app.get_functions() if f.get_function_name() == 'fleet_watchdog']\n"
        "[t] = [b for b in w.get_bindings_dict()['bindings'] if b['type'] == 'timerTrigger']\n"
        "print(json.dumps(t['runOnStartup']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) is expected


# =========================================================================================
# 4. api-keys: written once
# =========================================================================================


def test_api_keys_is_written_only_when_it_does_not_exist() -> None:
    found = resources("modules/keyvault.bicep", "Microsoft.KeyVault/vaults/secrets")
    api_keys = [r for r in found.values() if body(r)["name"] == "api-keys"]
    assert len(api_keys) == 1
    assert condition(api_keys[0]) == "createApiKeysList"
    assert render(module_params("keyVault")["createApiKeysList"]) == "not(apiKeysSecretExists)"
    assert param_default("main.bicep", "apiKeysSecretExists") is False
    assert supplied()["apiKeysSecretExists"]["value"] == "${SPOTGATE_API_KEYS_SECRET_EXISTS}"
    outputs = json.dumps(doc("main.bicep")["outputs"])
    assert "api-keys" not in outputs and "apiKey" not in outputs


@pytest.mark.parametrize(("count", "exists"), [("1", "true"), ("0", "false")])
def test_preprovision_tells_whether_api_keys_exists(hook: Fakes, count: str, exists: str) -> None:
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["group exists"]]
    hook.rule("az", "group exists", out="true\n")
    hook.rule("az", "keyvault list", "rg-sg-dev", out="1\n")
    hook.rule("az", "keyvault secret list", "kv-abc", "api-keys", out=f"{count}\n")
    env = {**HOOK_ENV, "SPOTGATE_ZONES": "1", "AZURE_KEY_VAULT_NAME": "kv-abc"}
    done = hook.run("sh", HOOKS / "preprovision.sh", env)
    assert done.returncode == 0, done.stderr
    assert hook.env_set()["SPOTGATE_API_KEYS_SECRET_EXISTS"] == exists


def test_preprovision_stops_rather_than_guess_about_api_keys(hook: Fakes) -> None:
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["group exists"]]
    hook.rule("az", "group exists", out="true\n")
    hook.rule("az", "keyvault list", out="1\n")
    hook.rule("az", "keyvault secret list", rc=1, err="Forbidden")
    env = {**HOOK_ENV, "SPOTGATE_ZONES": "1", "AZURE_KEY_VAULT_NAME": "kv-abc"}
    done = hook.run("sh", HOOKS / "preprovision.sh", env)
    assert done.returncode != 0
    assert "SPOTGATE_API_KEYS_SECRET_EXISTS" not in hook.env_set()


# =========================================================================================
# 5. Zones: a parameter, checked
# =========================================================================================


def test_no_bicep_file_hard_codes_the_zones() -> None:
    for path in sorted(BICEP.rglob("*.bicep")):
        relative = str(path.relative_to(BICEP))
        for name, parameter in doc(relative).get("parameters", {}).items():
            assert parameter["default"] != ["1", "2", "3"], f"{relative}: {name}"
    assert param_default("main.bicep", "workerZones") == ""
    assert "zones" not in doc("main.bicep")["parameters"]
    for module in ("workers", "functions"):
        assert module_params(module)["zones"] == "zones", module


def test_empty_zones_stop_the_deployment_with_the_list_skus_check() -> None:
    zones = variable("main.bicep", "zones")["operator"]
    assert zones["type"] == "conditional"
    assert render(zones["operands"]["condition"]) == "empty(zoneList)"
    failure = zones["operands"]["true_value"]["function"]
    assert failure["type"] == "fail"
    message = failure["parameters"]["arg_1"]
    assert "az vm list-skus --location" in message and "SPOTGATE_ZONES" in message
    assert zones["operands"]["false_value"] == "zoneList"
    assert "az vm list-skus" in description("main.bicep", "workerZones")
    assert supplied()["workerZones"]["value"] == "${SPOTGATE_ZONES}"


def test_preprovision_finds_the_zones_that_offer_the_size(hook: Fakes) -> None:
    hook.rule("az", "vm list-skus", "locationInfo", "Standard_NC24ads_A100_v4", out="3\n1\n2\n")
    hook.rule("az", "vm list-skus", "restrictions", out="2\n")
    done = hook.run("sh", HOOKS / "preprovision.sh", HOOK_ENV)
    assert done.returncode == 0, done.stderr
    assert hook.env_set()["SPOTGATE_ZONES"] == "1,3", "zone 2 is restricted"
    listed = [c["args"] for c in hook.calls("az") if c["args"][:2] == ["vm", "list-skus"]]
    assert listed and all("eastus" in args for args in listed)


def test_preprovision_fails_clearly_when_no_zone_offers_the_size(hook: Fakes) -> None:
    hook.rule("az", "vm list-skus", "locationInfo", out="")
    done = hook.run("sh", HOOKS / "preprovision.sh", HOOK_ENV)
    assert done.returncode != 0
    assert "no availability zone" in done.stderr and "az vm list-skus" in done.stderr


def test_preprovision_keeps_zones_that_were_set(hook: Fakes) -> None:
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "2"})
    assert done.returncode == 0, done.stderr
    assert "SPOTGATE_ZONES" not in hook.env_set()
    assert not [c for c in hook.calls("az") if c["args"][:2] == ["vm", "list-skus"]]


def test_the_hooks_default_size_is_the_templates() -> None:
    size = param_default("main.bicep", "workerVmSize")
    assert f"DEFAULT_VM_SIZE={size}" in (HOOKS / "preprovision.sh").read_text()
    assert f"$DefaultVmSize = '{size}'" in (HOOKS / "preprovision.ps1").read_text()


# =========================================================================================
# 6. azure.yaml: hooks that fail, on sh and pwsh
# =========================================================================================


def _hooks() -> dict[str, Any]:
    hooks: dict[str, Any] = yaml.safe_load(AZURE_YAML.read_text())["hooks"]
    return hooks


@pytest.mark.parametrize("name", ["preprovision", "postprovision", "postdown"])
def test_each_hook_runs_on_posix_and_windows_and_never_continues_on_error(name: str) -> None:
    hook = _hooks()[name]
    assert set(hook) == {"posix", "windows"}, "one run for every shell, not one for sh only"
    assert hook["posix"]["shell"] == "sh" and hook["windows"]["shell"] == "pwsh"
    for platform, suffix in (("posix", ".sh"), ("windows", ".ps1")):
        assert hook[platform].get("continueOnError", False) is False, platform
        script = REPO / hook[platform]["run"]
        assert script.is_file() and script.suffix == suffix, script
        assert script.name == f"{name}{suffix}"
    assert "continueOnError: true" not in AZURE_YAML.read_text()


@pytest.mark.parametrize("script", sorted(HOOKS.glob("*.sh")), ids=lambda p: p.name)
def test_the_sh_hooks_are_posix_sh_that_stop_on_errors(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert subprocess.run(["sh", "-n", str(script)], capture_output=True).returncode == 0
    assert not re.search(r"\|\|\s*true\b", text), "no swallowed failure"
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("script", sorted(HOOKS.glob("*.ps1")), ids=lambda p: p.name)
def test_the_pwsh_hooks_stop_on_errors_and_check_every_exit_code(script: Path) -> None:
    text = script.read_text()
    assert "$ErrorActionPreference = 'Stop'" in text
    # native commands do not throw: each az/azd call is checked ($LASTEXITCODE)
    lines = text.splitlines()
    for number, line in enumerate(lines):
        call = re.match(r"\s*(\$\w+\s*=\s*)?(az|azd) ", line)
        if not call or line.lstrip().startswith("#"):
            continue
        inside_checked = any(
            "Invoke-Checked" in lines[n] for n in range(max(0, number - 2), number)
        )
        checked_after = any("$LASTEXITCODE" in lines[n] for n in range(number + 1, number + 3))
        assert inside_checked or checked_after, f"{script.name}:{number + 1}: {line.strip()}"
    if shutil.which("pwsh"):
        parse = (
            "$e = $null; [System.Management.Automation.Language.Parser]::ParseFile("
            f"'{script}', [ref]$null, [ref]$e) | Out-Null; exit $e.Count"
        )
        assert subprocess.run(["pwsh", "-NoProfile", "-Command", parse]).returncode == 0


@pytest.mark.parametrize("name", ["preprovision", "postprovision", "postdown"])
def test_the_sh_and_pwsh_twins_do_the_same(name: str) -> None:
    sh = (HOOKS / f"{name}.sh").read_text()
    ps1 = (HOOKS / f"{name}.ps1").read_text()
    env_set = r"azd env set (\w+)"
    assert set(re.findall(env_set, sh)) == set(re.findall(env_set, ps1))
    az_verbs = r"\baz ((?:[a-z-]+ ){1,3})--"
    assert set(re.findall(az_verbs, sh)) == set(re.findall(az_verbs, ps1))
    for variable_name in set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", sh)) - {"DEFAULT_VM_SIZE"}:
        assert f"$env:{variable_name}" in ps1, f"{name}.ps1 does not read {variable_name}"


def test_preprovision_fails_when_microsoft_app_cannot_be_registered(hook: Fakes) -> None:
    hook.rule("az", "provider register", "Microsoft.App", rc=1, err="AuthorizationFailed")
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode != 0
    assert "Microsoft.App" in done.stderr
    assert hook.env_set() == {}, "nothing else ran"


def test_preprovision_fails_while_microsoft_app_is_not_registered(hook: Fakes) -> None:
    hook.rules["az"] = [r for r in hook.rules["az"] if r["match"] != ["provider show"]]
    hook.rule("az", "provider show", out="Registering\n")
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode != 0 and "Registering" in done.stderr


def test_preprovision_registers_microsoft_app_and_waits(hook: Fakes) -> None:
    done = hook.run("sh", HOOKS / "preprovision.sh", {**HOOK_ENV, "SPOTGATE_ZONES": "1"})
    assert done.returncode == 0, done.stderr
    first = hook.calls("az")[0]["args"]
    assert first == ["provider", "register", "--namespace", "Microsoft.App", "--wait"]


def test_preprovision_fails_without_the_ssh_key(hook: Fakes) -> None:
    env = {k: v for k, v in HOOK_ENV.items() if k != "SPOTGATE_WORKER_SSH_PUBLIC_KEY"}
    done = hook.run("sh", HOOKS / "preprovision.sh", {**env, "SPOTGATE_ZONES": "1"})
    assert done.returncode != 0 and "SPOTGATE_WORKER_SSH_PUBLIC_KEY" in done.stderr


# =========================================================================================
# 7. Private endpoints for Storage and Cosmos DB; Key Vault public with RBAC
# =========================================================================================


def test_private_networking_is_a_parameter_on_by_default() -> None:
    for relative in (
        "main.bicep",
        "modules/network.bicep",
        "modules/storage.bicep",
        "modules/cosmos.bicep",
    ):
        assert param_default(relative, "privateNetworking") is True, relative
    for module in ("network", "storage", "cosmos"):
        assert module_params(module)["privateNetworking"] == "privateNetworking", module
    assert supplied()["privateNetworking"]["value"] == "${SPOTGATE_PRIVATE_NETWORKING}"


def _switch(value: Any, on: Any, off: Any) -> None:
    operands = value["operator"]["operands"]
    assert operands["condition"] == "privateNetworking"
    assert (operands["true_value"], operands["false_value"]) == (on, off)


def test_storage_is_private_when_on() -> None:
    account = only("modules/storage.bicep", "Microsoft.Storage/storageAccounts")
    _switch(account["properties"]["publicNetworkAccess"], "Disabled", "Enabled")
    _switch(account["properties"]["networkAcls"]["defaultAction"], "Deny", "Allow")
    services = variable("modules/storage.bicep", "privateServices")["operator"]["operands"]
    assert services["condition"] == "privateNetworking"
    assert services["true_value"] == ["blob", "queue", "table"] and services["false_value"] == []
    [endpoint] = resources("modules/storage.bicep", "Microsoft.Network/privateEndpoints").values()
    assert endpoint["config"]["loop_type"]["detail"]["array_name"] == "privateServices"
    connection = body(endpoint)["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert render(connection["privateLinkServiceId"]) == "storage.id"
    assert connection["groupIds"] == ["service"]
    assert body(endpoint)["properties"]["subnet"]["id"] == "privateEndpointSubnetId"
    [group] = resources(
        "modules/storage.bicep", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
    ).values()
    config = body(group)["properties"]["privateDnsZoneConfigs"][0]["properties"]
    assert render(config["privateDnsZoneId"]) == "privateDnsZoneIds[service]"
    params = module_params("storage")
    assert render(params["privateEndpointSubnetId"]) == ("network.outputs.privateEndpointsSubnetId")
    assert render(params["privateDnsZoneIds"]) == "network.outputs.privateDnsZoneIds"


def test_cosmos_is_private_when_on() -> None:
    account = only("modules/cosmos.bicep", "Microsoft.DocumentDB/databaseAccounts")
    _switch(account["properties"]["publicNetworkAccess"], "Disabled", "Enabled")
    [endpoint] = resources("modules/cosmos.bicep", "Microsoft.Network/privateEndpoints").values()
    assert condition(endpoint) == "privateNetworking"
    connection = body(endpoint)["properties"]["privateLinkServiceConnections"][0]["properties"]
    assert connection["groupIds"] == ["Sql"] and render(connection["privateLinkServiceId"]) == (
        "account.id"
    )
    [group] = resources(
        "modules/cosmos.bicep", "Microsoft.Network/privateEndpoints/privateDnsZoneGroups"
    ).values()
    assert condition(group) == "privateNetworking"
    assert render(module_params("cosmos")["privateDnsZoneId"]) == (
        "network.outputs.privateDnsZoneIds.cosmos"
    )


def test_the_private_dns_zones_are_linked_to_the_vnet() -> None:
    names = variable("modules/network.bicep", "privateDnsZoneNames")
    assert names["cosmos"] == "privatelink.documents.azure.com"
    for service in ("blob", "queue", "table"):
        assert names[service] == f"privatelink.{service}.${{environment().suffixes.storage}}"
    zones = variable("modules/network.bicep", "privateDnsZones")["operator"]["operands"]
    assert zones["condition"] == "privateNetworking" and zones["false_value"] == []
    assert len(zones["true_value"]) == 4
    [link] = resources(
        "modules/network.bicep", "Microsoft.Network/privateDnsZones/virtualNetworkLinks"
    ).values()
    assert link["config"]["loop_type"]["detail"]["array_name"] == "privateDnsZones"
    assert body(link)["properties"]["registrationEnabled"] is False
    assert render(body(link)["properties"]["virtualNetwork"]["id"]) == "vnet.id"
    outputs = doc("modules/network.bicep")["outputs"]
    assert set(outputs["privateDnsZoneIds"]["value"]) == {"blob", "queue", "table", "cosmos"}


def test_key_vault_stays_public_with_rbac_and_the_choice_is_documented() -> None:
    vault = only("modules/keyvault.bicep", "Microsoft.KeyVault/vaults")
    assert vault["properties"]["publicNetworkAccess"] == "Enabled"
    assert vault["properties"]["enableRbacAuthorization"] is True
    assert "Key Vault references" in (MODULES / "keyvault.bicep").read_text()
    section = deploy_section()
    assert "Key Vault stays public" in section and "Key Vault references" in section


# =========================================================================================
# 8. Least privilege
# =========================================================================================

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def test_no_reader_role_anywhere() -> None:
    for path in sorted(BICEP.rglob("*.bicep")):
        assert READER not in path.read_text(), path.name
    assert "reader" not in variable("modules/roles.bicep", "roles")


def test_vm_contributor_is_scoped_to_the_scale_sets_by_default() -> None:
    assert param_default("main.bicep", "computeRoleScope") == "scaleSets"
    assert module_params("roles")["computeRoleScope"] == "computeRoleScope"
    assignments = resources("modules/roles.bicep", "Microsoft.Authorization/roleAssignments")
    on_group = assignments["functionsVmContributorOnGroup"]
    assert render(condition(on_group)) == "equals(computeRoleScope, resourceGroup)"
    scoped = variable("modules/roles.bicep", "scaleSetScoped")["operator"]["operands"]
    assert render(scoped["condition"]) == "equals(computeRoleScope, scaleSets)"
    assert scoped["true_value"] == "workerScaleSetNames"


def test_the_fleet_reader_is_read_only_on_three_resource_types() -> None:
    [role] = resources("modules/roles.bicep", "Microsoft.Authorization/roleDefinitions").values()
    assert role["config"]["loop_type"]["detail"]["array_name"] == "fleetReaderDefinitions"
    definitions = variable("modules/roles.bicep", "fleetReaderDefinitions")["operator"]
    assert render(definitions["operands"]["condition"]) == "equals(computeRoleScope, scaleSets)"
    assert definitions["operands"]["false_value"] == []
    properties = body(role)["properties"]
    assert properties["permissions"][0]["actions"] == "fleetReaderActions"
    assert properties["permissions"][0]["notActions"] == []
    assert "dataActions" not in properties["permissions"][0]
    actions = variable("modules/roles.bicep", "fleetReaderActions")
    assert sorted(actions) == [
        "Microsoft.Compute/virtualMachineScaleSets/read",
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Network/networkInterfaces/read",
    ]
    assert [render(s) for s in properties["assignableScopes"]] == ["resource_group().id"]
    assigned = resources("modules/roles.bicep", "Microsoft.Authorization/roleAssignments")
    fleet_reader = body(assigned["functionsFleetReader"])["properties"]
    assert render(fleet_reader["roleDefinitionId"]) == "fleetReaderRole[i].id"
    assert fleet_reader["principalId"] == "functionsPrincipalId"


def test_basic_publishing_credentials_are_off() -> None:
    policy_type = "Microsoft.Web/sites/basicPublishingCredentialsPolicies"
    found = resources("modules/functions.bicep", policy_type).values()
    policies = {body(r)["name"]: r for r in found}
    assert set(policies) == {"ftp", "scm"}
    for name, resource in policies.items():
        assert condition(resource) is None, f"{name}: always, not on a condition"
        assert body(resource)["parent"] == "site", name
        assert body(resource)["properties"] == {"allow": False}, name


# =========================================================================================
# 9. Workers: vLLM's key from Key Vault, the image by digest from the registry, no driver
# =========================================================================================

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def test_the_vllm_image_is_pinned_by_digest_and_checked() -> None:
    assert DIGEST.search(param_default("main.bicep", "vllmImage"))
    assert not param_default("main.bicep", "vllmImage").startswith(("docker.io", "http"))
    pinned = variable("main.bicep", "vllmImagePinned")["operator"]["operands"]
    assert render(pinned["condition"]) == "contains(vllmImage, @sha256:)"
    assert pinned["false_value"]["function"]["type"] == "fail"
    assert module_params("workers")["vllmImage"] == "vllmImagePinned"
    assert param_default("modules/workers.bicep", "vllmImage") is None, "no unpinned default"


def test_the_workers_pull_from_the_registry_the_template_creates() -> None:
    registry = only("modules/workers.bicep", "Microsoft.ContainerRegistry/registries")
    assert registry["properties"]["adminUserEnabled"] is False
    assert registry["properties"]["anonymousPullEnabled"] is False
    reference = variable("modules/workers.bicep", "vllmImageReference")
    assert reference == "${registry.properties.loginServer}/${vllmImage}"
    text = (MODULES / "workers.bicep").read_text()
    assert "'__VLLM_IMAGE__', vllmImageReference)" in text
    assert render(module_params("workers")["registryName"]) == "names.registry"
    assert render(module_params("roles")["registryName"]) == "workers.outputs.registryName"
    assert "az acr import" in deploy_section()


def test_vllm_requires_the_key_by_default_now_that_the_gateway_sends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert param_default("main.bicep", "vllmApiKeyRequired") is True
    from spotgate.adapters.azure import key_vault_secrets
    from spotgate.hosts.azure import azure_secrets
    from spotgate.settings import AzureSettings, Settings

    read: list[str] = []
    monkeypatch.setattr(
        key_vault_secrets, "KeyVaultSecrets", lambda url, credential, names: read.extend(names)
    )
    azure_secrets(Settings(azure=AzureSettings(key_vault_url="https://kv.vault.azure.net")))
    assert "vllm-api-key" in read, "the gateway reads the key the workers require"


def test_vllm_requires_the_key_from_key_vault_when_on() -> None:
    text = (MODULES / "workers.bicep").read_text()
    assert "'__VLLM_KEY_SECRET__', vllmApiKeySecretName)" in text
    passed = module_params("workers")["vllmApiKeySecretName"]["operator"]["operands"]
    assert passed == {
        "condition": "vllmApiKeyRequired",
        "true_value": "vllmApiKeySecretName",
        "false_value": "",
    }
    assert variable("main.bicep", "vllmApiKeySecretName") == "vllm-api-key"
    assert supplied()["vllmApiKey"]["value"] == (
        "$(secretOrRandomPassword ${AZURE_KEY_VAULT_NAME} vllm-api-key)"
    )
    unit = CLOUD_INIT.read_text()
    assert "ExecStartPre=/opt/spotgate/vllm-prestart.sh" in unit, "not '-': a failure stops it"
    assert "--env-file /run/spotgate/vllm-key.env" in unit


def _prestart(tmp_path: Path) -> Path:
    entries = yaml.safe_load(CLOUD_INIT.read_text())["write_files"]
    [entry] = [e for e in entries if e["path"] == "/opt/spotgate/vllm-prestart.sh"]
    script = tmp_path / "vllm-prestart.sh"
    script.write_text(entry["content"])
    return script


PRESTART_ENV = {
    "SPOTGATE_VLLM_IMAGE": "crabc.azurecr.io/vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64,
    "SPOTGATE_KEY_VAULT_URL": "https://kv-abc.vault.azure.net/",
    "SPOTGATE_IDENTITY_CLIENT_ID": "6c3f3a1e-52b1-4c55-9d7e-0f0d2b6f1a44",
}
SECRET = "sg-vllm-9f1c2d3e-secret"


@pytest.fixture
def prestart(tmp_path: Path) -> tuple[Fakes, Path]:
    fakes = Fakes(tmp_path, ("nvidia-smi", "curl", "docker"))
    fakes.rule(
        "curl", "169.254.169.254", "management.azure.com", out='{"access_token": "ARM-TOKEN"}'
    )
    fakes.rule("curl", "169.254.169.254", "vault.azure.net", out='{"access_token": "KV-TOKEN"}')
    fakes.rule("curl", "oauth2/exchange", out='{"refresh_token": "ACR-REFRESH"}')
    fakes.rule("curl", "/secrets/vllm-api-key", out=json.dumps({"value": SECRET}))
    return fakes, _prestart(tmp_path)


def test_prestart_writes_the_key_for_docker_and_nowhere_else(
    prestart: tuple[Fakes, Path], tmp_path: Path
) -> None:
    fakes, script = prestart
    key_file = tmp_path / "run" / "vllm-key.env"
    env = {
        **PRESTART_ENV,
        "SPOTGATE_VLLM_KEY_SECRET": "vllm-api-key",
        "SPOTGATE_VLLM_KEY_FILE": str(key_file),
    }
    done = fakes.run("bash", script, env)
    assert done.returncode == 0, done.stderr
    assert key_file.read_text() == f"VLLM_API_KEY={SECRET}\n"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    for call in fakes.calls():
        argv = " ".join(call["args"])
        for secret in (SECRET, "KV-TOKEN", "ARM-TOKEN", "ACR-REFRESH"):
            assert secret not in argv, f"{secret} on the command line of {call['cmd']}"
    assert SECRET not in done.stdout + done.stderr
    [kv] = [c for c in fakes.calls("curl") if "/secrets/vllm-api-key" in " ".join(c["args"])]
    assert "-H" in kv["args"] and kv["stdin"] == "Authorization: Bearer KV-TOKEN"
    [login] = fakes.calls("docker")
    assert (
        login["args"][:2] == ["login", "crabc.azurecr.io"] and "--password-stdin" in login["args"]
    )
    assert login["stdin"] == "ACR-REFRESH"
    [exchange] = [c for c in fakes.calls("curl") if "oauth2/exchange" in " ".join(c["args"])]
    assert exchange["stdin"] == "ARM-TOKEN", "no newline: it is a form value"
    imds = [c for c in fakes.calls("curl") if "169.254.169.254" in " ".join(c["args"])]
    assert imds and all("client_id=6c3f3a1e" in " ".join(c["args"]) for c in imds)


def test_prestart_refuses_to_start_vllm_without_its_key(
    prestart: tuple[Fakes, Path], tmp_path: Path
) -> None:
    fakes, script = prestart
    fakes.rules["curl"] = [
        r for r in fakes.rules["curl"] if "/secrets/vllm-api-key" not in r["match"]
    ]
    fakes.rule("curl", "/secrets/vllm-api-key", rc=22)
    key_file = tmp_path / "run" / "vllm-key.env"
    env = {
        **PRESTART_ENV,
        "SPOTGATE_VLLM_KEY_SECRET": "vllm-api-key",
        "SPOTGATE_VLLM_KEY_FILE": str(key_file),
    }
    done = fakes.run("bash", script, env)
    assert done.returncode != 0
    assert "vllm-api-key" in done.stderr and "not started" in done.stderr
    assert key_file.read_text() == ""


def test_prestart_without_a_required_key_leaves_vllm_open(
    prestart: tuple[Fakes, Path], tmp_path: Path
) -> None:
    fakes, script = prestart
    key_file = tmp_path / "run" / "vllm-key.env"
    env = {**PRESTART_ENV, "SPOTGATE_VLLM_KEY_SECRET": "", "SPOTGATE_VLLM_KEY_FILE": str(key_file)}
    done = fakes.run("bash", script, env)
    assert done.returncode == 0, done.stderr
    assert key_file.read_text() == ""
    assert not [c for c in fakes.calls("curl") if "/secrets/" in " ".join(c["args"])]


def test_prestart_says_clearly_when_there_is_no_nvidia_driver(
    prestart: tuple[Fakes, Path], tmp_path: Path
) -> None:
    fakes, script = prestart
    fakes.rule("nvidia-smi", rc=9, err="NVIDIA-SMI has failed")
    env = {**PRESTART_ENV, "SPOTGATE_VLLM_KEY_FILE": str(tmp_path / "k.env")}
    done = fakes.run("bash", script, env)
    assert done.returncode != 0
    assert "no working NVIDIA driver" in done.stderr and "N-series" in done.stderr
    assert not fakes.calls("docker") and not fakes.calls("curl")


def test_cloud_init_stops_the_install_when_there_is_no_nvidia_driver(tmp_path: Path) -> None:
    entries = yaml.safe_load(CLOUD_INIT.read_text())["write_files"]
    [entry] = [e for e in entries if e["path"] == "/opt/spotgate/install-runtime.sh"]
    script = tmp_path / "install-runtime.sh"
    script.write_text(entry["content"])
    fakes = Fakes(tmp_path, ("nvidia-smi", "apt-get", "curl", "docker", "nvidia-ctk", "systemctl"))
    fakes.rule("nvidia-smi", rc=9)
    done = fakes.run("bash", script, {})
    assert done.returncode != 0
    assert "FATAL: no working NVIDIA driver" in done.stderr
    assert [c["cmd"] for c in fakes.calls()] == ["nvidia-smi"], "nothing installed after it"


def test_the_workers_may_read_only_their_two_secrets_and_pull() -> None:
    assigned = resources("modules/roles.bicep", "Microsoft.Authorization/roleAssignments")
    workers = {
        name: render(body(r).get("scope"))
        for name, r in assigned.items()
        if body(r)["properties"]["principalId"] == "workersPrincipalId"
    }
    assert sorted(workers.values()) == ["fleetTokenItem", "registry", "vllmApiKeyItem"]


# =========================================================================================
# 10. postdown: the subscription's Activity Log export goes with `azd down`
# =========================================================================================


def test_the_activity_log_setting_name_is_an_output() -> None:
    [setting] = resources("main.bicep", "Microsoft.Insights/diagnosticSettings").values()
    assert body(setting)["name"] == "activityLogSettingName"
    output = doc("main.bicep")["outputs"]["SPOTGATE_ACTIVITY_LOG_SETTING"]["value"]
    assert output["operator"]["operands"] == {
        "condition": "exportActivityLog",
        "true_value": "activityLogSettingName",
        "false_value": "",
    }


@pytest.fixture
def postdown(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path, ("az",))


def test_postdown_deletes_the_activity_log_setting(postdown: Fakes) -> None:
    env = {**HOOK_ENV, "SPOTGATE_ACTIVITY_LOG_SETTING": "spotgate-sg-dev-activity"}
    done = postdown.run("sh", HOOKS / "postdown.sh", env)
    assert done.returncode == 0, done.stderr
    deletes = [c["args"] for c in postdown.calls("az") if "delete" in c["args"]]
    assert len(deletes) == 1
    url = deletes[0][deletes[0].index("--url") + 1]
    assert url == (
        "/subscriptions/00000000-0000-0000-0000-000000000001/providers/"
        "Microsoft.Insights/diagnosticSettings/spotgate-sg-dev-activity"
        "?api-version=2021-05-01-preview"
    )


def test_postdown_fails_when_the_delete_fails(postdown: Fakes) -> None:
    postdown.rule("az", "rest", "--method delete", rc=1, err="AuthorizationFailed")
    env = {**HOOK_ENV, "SPOTGATE_ACTIVITY_LOG_SETTING": "spotgate-sg-dev-activity"}
    done = postdown.run("sh", HOOKS / "postdown.sh", env)
    assert done.returncode != 0 and "spotgate-sg-dev-activity" in done.stderr


def test_postdown_does_nothing_when_no_export_was_deployed(postdown: Fakes) -> None:
    done = postdown.run(
        "sh", HOOKS / "postdown.sh", {**HOOK_ENV, "SPOTGATE_ACTIVITY_LOG_SETTING": ""}
    )
    assert done.returncode == 0 and postdown.calls() == []


def test_postdown_without_the_output_uses_the_templates_name(postdown: Fakes) -> None:
    done = postdown.run("sh", HOOKS / "postdown.sh", HOOK_ENV)
    assert done.returncode == 0, done.stderr
    [delete] = [c["args"] for c in postdown.calls("az") if "delete" in c["args"]]
    assert "/diagnosticSettings/spotgate-sg-dev-activity?" in " ".join(delete)


# =========================================================================================
# 11. CORS for browser clients
# =========================================================================================


def test_cors_origins_are_a_parameter_off_by_default() -> None:
    assert param_default("main.bicep", "corsAllowedOrigins") == ""
    assert param_default("modules/functions.bicep", "corsAllowedOrigins") == []
    assert module_params("functions")["corsAllowedOrigins"] == "corsOrigins"
    assert render(_app_settings()["SPOTGATE_CORS_ALLOWED_ORIGINS"]) == (
        "string(corsAllowedOrigins)"
    )
    site = only("modules/functions.bicep", "Microsoft.Web/sites")
    assert "cors" not in site["properties"]["siteConfig"], "one CORS layer: the app's"
    assert supplied()["corsAllowedOrigins"]["value"] == "${SPOTGATE_CORS_ALLOWED_ORIGINS}"


# =========================================================================================
# The README's "Deploy to Azure" and main.parameters.json
# =========================================================================================


def test_every_knob_is_an_azd_variable_and_the_bicep_default_is_the_only_default() -> None:
    for parameter, env_name in {**KNOBS, **HOOK_SET}.items():
        assert supplied()[parameter]["value"] == f"${{{env_name}}}", parameter
        assert main_param(parameter)["default"] is not None, f"{parameter}: azd would prompt"


def test_the_readme_maps_every_knob_to_its_parameter_and_azd_variable() -> None:
    section = deploy_section()
    for parameter, env_name in KNOBS.items():
        rows = [line for line in section.splitlines() if f"`{parameter}`" in line]
        assert any(f"`{env_name}`" in row for row in rows), f"{parameter} / {env_name}"


def test_the_readme_names_the_permissions_and_the_quota_in_numbers() -> None:
    section = deploy_section()
    assert "Owner" in section and "Contributor" in section
    assert "User Access Administrator" in section
    size = param_default("main.bicep", "workerVmSize")
    workers = param_default("main.bicep", "maxWorkers")
    vcpus = VCPUS[size] * workers
    assert f"{vcpus} vCPUs" in section, f"{workers} x {VCPUS[size]}"
    assert "spot" in section.lower() and "Spot vCPUs" in section


def test_the_readme_documents_the_postdown_and_the_hooks() -> None:
    section = deploy_section()
    assert "postdown" in section and "Activity Log" in section
    assert "SPOTGATE_CORS_ALLOWED_ORIGINS" in section


def test_no_new_output_or_setting_carries_a_secret() -> None:
    outputs = doc("main.bicep")["outputs"]
    secrets = {"vllmApiKey", "apiKey", "adminKey", "fleetToken", "keySalt"}
    for name, output in outputs.items():
        assert not strings(output["value"]) & secrets, name
    assert "vllm-api-key" not in json.dumps(_app_settings())

"""worker_image/cloud-init.yaml: the customData every GPU VM of a pool boots with.

No VM boots here. What can be checked offline is checked: the YAML, each file it
writes (the agent byte for byte, env files the agent itself parses, systemd units,
scripts), that it is what the generator renders from the template now, the size
Azure accepts once Bicep has filled the placeholders, and that no secret is in it.
The health-check script runs for real against fake `curl` and `systemctl`.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import gzip
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.worker_image.test_agent import load_agent

WORKER_IMAGE = Path(__file__).resolve().parents[2] / "worker_image"
CLOUD_INIT = WORKER_IMAGE / "cloud-init.yaml"
TEMPLATE = WORKER_IMAGE / "cloud-init.template.yaml"
AGENT = WORKER_IMAGE / "agent.py"
# What Bicep fills in with replace(); tests/infra/test_bicep.py holds the Bicep side to it.
PLACEHOLDERS = {
    "__CONTROL_PLANE_URL__",
    "__KEY_VAULT_URL__",
    "__FLEET_TOKEN_SECRET__",
    "__POOL__",
    "__MODEL__",
    "__MODEL_SOURCE__",
    "__PRIORITY__",
    "__VLLM_IMAGE__",
    "__VLLM_KEY_SECRET__",
    "__AGENT_CLIENT_ID__",
}
# What Bicep may fill in, at the length limits Azure and Hugging Face set (or past them)
LONGEST = {
    "__CONTROL_PLANE_URL__": "https://" + "f" * 60 + ".azurewebsites.net/" + "p" * 200,
    "__KEY_VAULT_URL__": "https://" + "k" * 24 + ".vault.usgovcloudapi.net/",
    "__FLEET_TOKEN_SECRET__": "s" * 127,
    "__POOL__": "p" * 128,
    "__MODEL__": "m" * 256,
    "__MODEL_SOURCE__": "/models/" + "d" * 500,
    "__PRIORITY__": "on-demand",
    "__VLLM_IMAGE__": "r" * 253 + "/vllm/vllm-openai:" + "t" * 128 + "@sha256:" + "d" * 64,
    "__VLLM_KEY_SECRET__": "s" * 127,
    "__AGENT_CLIENT_ID__": "00000000-0000-0000-0000-000000000000",
}
REALISTIC = {
    "__CONTROL_PLANE_URL__": "https://func-spotgate-x7k2.azurewebsites.net",
    "__KEY_VAULT_URL__": "https://kv-spotgate-x7k2.vault.azure.net/",
    "__FLEET_TOKEN_SECRET__": "fleet-token",
    "__POOL__": "llama-8b #1: spot",
    "__MODEL__": "meta-llama/Llama-3.1-8B-Instruct",
    "__MODEL_SOURCE__": "meta-llama/Llama-3.1-8B-Instruct",
    "__PRIORITY__": "spot",
    "__VLLM_IMAGE__": "crspotgatex7k2.azurecr.io/vllm/vllm-openai:v0.11.0@sha256:" + "0" * 64,
    "__VLLM_KEY_SECRET__": "vllm-api-key",
    "__AGENT_CLIENT_ID__": "6c3f3a1e-52b1-4c55-9d7e-0f0d2b6f1a44",
}


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_cloud_init", WORKER_IMAGE / "build_cloud_init.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    return load_builder()


@pytest.fixture(scope="module")
def text() -> str:
    return CLOUD_INIT.read_text(encoding="utf-8")


def substitute(text: str, values: dict[str, str]) -> str:
    """What Bicep's nested replace() calls make of the file."""
    for token, value in values.items():
        text = text.replace(token, value)
    return text


def written(text: str) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in yaml.safe_load(text)["write_files"]}


def content(text: str, path: str) -> str:
    entry = written(text)[path]
    assert entry.get("encoding") is None, f"{path} is meant to be readable in the file"
    return str(entry["content"])


def env_file(text: str, path: str) -> dict[str, str]:
    pairs = {}
    for line in content(text, path).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"not KEY=value: {line!r}"
            pairs[key] = value
    return pairs


def unit(text: str, name: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values]}}: comments, continuations, repeats."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    for raw in content(text, f"/etc/systemd/system/{name}").splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if line.startswith("["):
            assert line.endswith("]"), f"{name}: bad section {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"{name}: not key=value in a section: {line!r}"
        current.setdefault(key.strip(), []).append(" ".join(value.split()))
    assert not logical, f"{name}: ends inside a continued line"
    return sections


def seconds(value: str) -> float:
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)\s*([a-z]*)", value)
    assert match and match.group(2) in units, f"unexpected time span {value!r}"
    return int(match.group(1)) * units[match.group(2)]


# --- the file and how it is made ----------------------------------------------------------


def test_is_a_cloud_config_that_parses(text: str) -> None:
    assert text.splitlines()[0] == "#cloud-config"
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and set(data) == {"write_files", "runcmd"}
    assert all(isinstance(e["path"], str) and "content" in e for e in data["write_files"])
    assert yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))["write_files"]
    assert TEMPLATE.read_text(encoding="utf-8").splitlines()[0] == "#cloud-config"


def test_carries_every_placeholder_and_no_other(text: str) -> None:
    found = set(re.findall(r"__[A-Z][A-Z_]*?__", text))
    assert found == PLACEHOLDERS
    filled = substitute(text, REALISTIC)
    assert not re.search(r"__[A-Z][A-Z_]*__", filled), "a token Bicep would not replace"


def test_embedded_agent_is_agent_py_byte_for_byte(text: str) -> None:
    entry = written(text)["/opt/spotgate/agent.py"]
    assert entry["encoding"] == "gz+b64" and entry["permissions"] == "0644"
    assert gzip.decompress(base64.b64decode(entry["content"])) == AGENT.read_bytes()


def test_is_what_the_generator_renders_now(builder: ModuleType, text: str) -> None:
    """Fails when agent.py or the template changed and cloud-init.yaml was not regenerated."""
    rendered = builder.render(TEMPLATE.read_text(encoding="utf-8"))
    assert builder.normalise(text) == builder.normalise(rendered), (
        "worker_image/cloud-init.yaml is stale: run python worker_image/build_cloud_init.py"
    )
    assert builder.main(["--check"]) == 0
    assert "GENERATED by worker_image/build_cloud_init.py" in text.splitlines()[1]


def test_the_check_notices_an_edited_agent(builder: ModuleType, tmp_path: Path) -> None:
    template = TEMPLATE.read_text(encoding="utf-8")
    assert builder.render(template) == builder.render(template), "rendering is deterministic"
    (tmp_path / "agent.py").write_bytes(AGENT.read_bytes() + b"# one more line\n")
    edited = builder.render(template, root=tmp_path)
    current = builder.normalise(builder.render(template))
    assert builder.normalise(edited) != current
    assert "sha256:" in current and "H4sI" not in current


def test_custom_data_fits_azure_with_the_longest_values(builder: ModuleType, text: str) -> None:
    filled = substitute(text, LONGEST)
    custom_data = base64.b64encode(filled.encode("utf-8"))
    assert len(custom_data) <= builder.CUSTOM_DATA_LIMIT == 65535
    assert len(text) <= 131072, "Bicep's loadTextContent reads at most 131072 characters"
    assert written(filled)["/etc/spotgate/vllm.env"]


def test_agent_runs_on_the_images_python() -> None:
    """Ubuntu 22.04, the oldest image meant, has Python 3.10."""
    ast.parse(AGENT.read_text(encoding="utf-8"), feature_version=(3, 10))
    python310 = shutil.which("python3.10")
    if python310 is None or subprocess.run([python310, "-c", ""], capture_output=True).returncode:
        pytest.skip("no python3.10 here to run the agent with")
    run = subprocess.run([python310, str(AGENT), "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


# --- what the VM is told ------------------------------------------------------------------


def test_agent_env_configures_the_agent_from_key_vault(text: str) -> None:
    env = env_file(substitute(text, REALISTIC), "/etc/spotgate/agent.env")
    agent = load_agent()
    names = {f.name for f in dataclasses.fields(agent.Config)}
    for key in env:
        field = key.removeprefix("SPOTGATE_").lower().replace("control_plane_url", "control_plane")
        assert field in names, f"{key} configures nothing in agent.py"
    config = agent.parse_args([], env)
    assert config.control_plane == "https://func-spotgate-x7k2.azurewebsites.net"
    assert config.key_vault_url == "https://kv-spotgate-x7k2.vault.azure.net/"
    assert config.fleet_token_secret == "fleet-token" and config.fleet_token is None
    assert config.identity_client_id == "6c3f3a1e-52b1-4c55-9d7e-0f0d2b6f1a44"
    assert (config.pool, config.model, config.priority) == (
        "llama-8b #1: spot",
        "meta-llama/Llama-3.1-8B-Instruct",
        "spot",
    )
    assert (config.engine, config.engine_url) == ("vllm", "http://127.0.0.1:8000")
    assert config.worker_id is config.zone is config.advertise_url is None, "from IMDS"
    assert config.engine_ready_timeout >= 1800
    system_identity = substitute(text, {**REALISTIC, "__AGENT_CLIENT_ID__": ""})
    env = env_file(system_identity, "/etc/spotgate/agent.env")
    assert agent.parse_args([], env).identity_client_id is None


def test_agent_env_has_the_vault_and_no_token(text: str) -> None:
    env = env_file(text, "/etc/spotgate/agent.env")
    assert env["SPOTGATE_KEY_VAULT_URL"] == "__KEY_VAULT_URL__"
    assert "SPOTGATE_FLEET_TOKEN" not in env
    assert not re.search(r"FLEET_TOKEN\s*=", text)


# Names, not values: the variable vllm-prestart.sh fills from Key Vault at run time (a shell
# variable, never a literal) and the docker flag that takes the registry token on stdin.
SECRET_NAMES_FILLED_AT_RUN_TIME = ('VLLM_API_KEY=%s\\n\' "$key"', "--password-stdin")


def test_nothing_that_looks_like_a_secret(builder: ModuleType, text: str) -> None:
    readable = builder.normalise(text)  # the agent's payload, as its digest
    for name in SECRET_NAMES_FILLED_AT_RUN_TIME:
        assert readable.count(name) == 1, name
        readable = readable.replace(name, "")
    for pattern in (
        r"FLEET_TOKEN\s*=",
        r"-----BEGIN",
        r"AccountKey=",
        r"SharedAccessSignature|[?&]sig=",
        r"(?i)password|passwd|client_secret|api[_-]?key",
        r"(?i)bearer\s+[a-z0-9]",
        r"eyJ[A-Za-z0-9_-]{10,}",  # a JWT
        r"\bhf_[A-Za-z0-9]{20,}",  # a Hugging Face token
        r"(?i)HF_TOKEN|HUGGING_FACE_HUB_TOKEN",
        r"\bsk-[A-Za-z0-9]{16,}",
        r"ssh-(rsa|ed25519) ",
    ):
        assert not re.search(pattern, readable), f"looks like a secret: {pattern}"
    for blob in re.findall(r"[A-Za-z0-9+/=_-]{32,}", readable):
        mixed = all(re.search(chars, blob) for chars in ("[A-Z]", "[a-z]", "[0-9]"))
        assert not mixed, f"a random-looking string: {blob}"


def test_vllm_env_defines_what_the_units_use(text: str) -> None:
    env = env_file(text, "/etc/spotgate/vllm.env")
    assert env["SPOTGATE_VLLM_IMAGE"] == "__VLLM_IMAGE__"
    assert env["SPOTGATE_VLLM_MODEL_SOURCE"] == "__MODEL_SOURCE__"
    assert env["SPOTGATE_VLLM_SERVED_MODEL_NAME"] == "__MODEL__"
    for name in ("spotgate-vllm.service", "spotgate-vllm-health.service"):
        service = unit(text, name)["Service"]
        assert service["EnvironmentFile"] == ["/etc/spotgate/vllm.env"]
        used = re.findall(r"\$\{?(\w+)", " ".join(v for vs in service.values() for v in vs))
        assert set(used) <= set(env), f"{name} uses variables vllm.env does not set"
    script = content(text, "/opt/spotgate/vllm-health.sh")
    assert {"SPOTGATE_HEALTH_FAILURES", "SPOTGATE_VLLM_STARTUP_GRACE_S"} <= set(env)
    assert all(key in script for key in env if key.startswith("SPOTGATE_HEALTH"))


# --- systemd ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["spotgate-vllm.service", "spotgate-agent.service"])
def test_long_running_units_restart_always(text: str, name: str) -> None:
    sections = unit(text, name)
    assert {"Unit", "Service", "Install"} <= set(sections)
    service = sections["Service"]
    assert service["Restart"] == ["always"] and service["ExecStart"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]
    assert service["StandardOutput"] == ["journal"] and service["StandardError"] == ["journal"]
    assert sections["Unit"]["StartLimitIntervalSec"] == ["0"], "never stop restarting"


def test_vllm_unit_runs_the_pinned_container(text: str) -> None:
    sections = unit(text, "spotgate-vllm.service")
    service = sections["Service"]
    assert service["RestartSec"] == ["5"]
    assert seconds(service["TimeoutStartSec"][0]) >= 900, "room to pull a ~10 GB image"
    assert any("docker pull ${SPOTGATE_VLLM_IMAGE}" in v for v in service["ExecStartPre"])
    (run,) = service["ExecStart"]
    assert run.startswith("/usr/bin/docker run ")
    for part in (
        "--gpus all",
        "--publish 8000:8000",
        "--name spotgate-vllm",
        " ${SPOTGATE_VLLM_IMAGE} --model ${SPOTGATE_VLLM_MODEL_SOURCE} ",
        "--served-model-name ${SPOTGATE_VLLM_SERVED_MODEL_NAME}",
        "--host 0.0.0.0 --port 8000",
        "--volume ${SPOTGATE_MODELS_DIR}:${SPOTGATE_MODELS_DIR}:ro",
    ):
        assert part in run, part
    assert " -d " not in run and "--detach" not in run, "attached: its output is the unit's"
    assert "docker.service" in sections["Unit"]["After"][0]


def test_agent_unit_survives_vllm_restarts(text: str) -> None:
    sections = unit(text, "spotgate-agent.service")
    head, service = sections["Unit"], sections["Service"]
    for key in ("Requires", "BindsTo", "PartOf", "Requisite"):
        assert not any("spotgate-vllm" in v for v in head.get(key, [])), key
    for key in ("After", "Wants"):
        assert {"network-online.target", "spotgate-vllm.service"} <= set(head[key][0].split())
    assert service["ExecStart"] == ["/usr/bin/python3 /opt/spotgate/agent.py"]
    assert service["EnvironmentFile"] == ["/etc/spotgate/agent.env"]
    assert service["DynamicUser"] == ["yes"] and service["User"] != ["root"]
    assert service["KillSignal"] == ["SIGTERM"]
    preempt_notice = 30
    assert seconds(service["TimeoutStopSec"][0]) > preempt_notice


def test_health_check_is_a_timer_and_a_oneshot(text: str) -> None:
    timer = unit(text, "spotgate-vllm-health.timer")
    assert seconds(timer["Timer"]["OnUnitActiveSec"][0]) <= 30
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    service = unit(text, "spotgate-vllm-health.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["ExecStart"] == ["/opt/spotgate/vllm-health.sh"]
    assert written(text)["/opt/spotgate/vllm-health.sh"]["permissions"] == "0755"


def test_runcmd_installs_then_enables_what_it_wrote(text: str) -> None:
    data = yaml.safe_load(text)
    files = written(text)
    commands = [" ".join(c) if isinstance(c, list) else c for c in data["runcmd"]]
    assert commands[0] == "/opt/spotgate/install-runtime.sh"
    assert files["/opt/spotgate/install-runtime.sh"]["permissions"] == "0755"
    wanted = {"spotgate-vllm.service", "spotgate-agent.service", "spotgate-vllm-health.timer"}
    for verb in ("enable", "start --no-block"):
        (command,) = [c for c in commands if c.startswith(f"systemctl {verb} ")]
        named = set(command.split()[len(verb.split()) + 1 :])
        assert named == wanted
    for name in wanted | {"spotgate-vllm-health.service"}:
        assert f"/etc/systemd/system/{name}" in files
    install = content(text, "/opt/spotgate/install-runtime.sh")
    assert re.search(r'^NVIDIA_CONTAINER_TOOLKIT_VERSION="[\d.]+-\d+"$', install, re.M)
    assert re.search(r'^DOCKER_VERSION="', install, re.M)
    assert "command -v docker" in install and "command -v nvidia-ctk" in install


def test_scripts_are_valid_shell(text: str, tmp_path: Path) -> None:
    for path, shell in (
        ("/opt/spotgate/install-runtime.sh", "bash"),
        ("/opt/spotgate/vllm-health.sh", "sh"),
    ):
        script = content(text, path)
        assert script.startswith(f"#!/bin/{shell}\n")
        (tmp_path / "script").write_text(script)
        check = subprocess.run([shell, "-n", str(tmp_path / "script")], capture_output=True)
        assert check.returncode == 0, check.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(text: str, tmp_path: Path) -> None:
    names = [p for p in written(text) if p.startswith("/etc/systemd/system/")]
    for path in names:
        (tmp_path / Path(path).name).write_text(content(text, path))
    run = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / Path(p).name) for p in names)],
        capture_output=True,
        text=True,
    )
    complaints = [
        line
        for line in (run.stdout + run.stderr).splitlines()
        # docker and the scripts are on the VM, not here
        if line.strip() and "is not executable: No such file or directory" not in line
    ]
    assert complaints == []


# --- the health check, run against fake curl and systemctl -------------------------------


class HealthCheck:
    """Runs vllm-health.sh with `curl` and `systemctl` that answer as the test says."""

    def __init__(self, text: str, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.script = tmp_path / "vllm-health.sh"
        self.script.write_text(content(text, "/opt/spotgate/vllm-health.sh"))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        fakes = {
            "systemctl": (
                '#!/bin/sh\ncase "$1" in\n'
                '  is-active) exit "$(cat "$FAKE/active")" ;;\n'
                '  show) cat "$FAKE/started" ;;\n'
                '  restart) echo "$*" >> "$FAKE/restarts" ;;\n'
                "esac\n"
            ),
            "curl": '#!/bin/sh\necho "$*" >> "$FAKE/curls"\nexit "$(cat "$FAKE/curl_rc")"\n',
        }
        for name, body in fakes.items():
            (bin_dir / name).write_text(body)
            (bin_dir / name).chmod(0o755)
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "FAKE": str(tmp_path),
            "SPOTGATE_HEALTH_STATE": str(tmp_path / "state"),
            "SPOTGATE_HEALTH_URL": "http://127.0.0.1:8000/health",
            "SPOTGATE_HEALTH_FAILURES": "3",
            "SPOTGATE_VLLM_STARTUP_GRACE_S": "100",
        }
        self.uptime = float(Path("/proc/uptime").read_text().split()[0])
        self.set(active=True, healthy=True, started_ago=10)

    def set(
        self,
        active: bool | None = None,
        healthy: bool | None = None,
        started_ago: float | None = None,
    ) -> None:
        if active is not None:
            (self.dir / "active").write_text("0" if active else "3")
        if healthy is not None:
            (self.dir / "curl_rc").write_text("0" if healthy else "22")
        if started_ago is not None:
            (self.dir / "started").write_text(f"{int((self.uptime - started_ago) * 1e6)}\n")

    def run(self, healthy: bool | None = None) -> str:
        self.set(healthy=healthy)
        done = subprocess.run(
            ["sh", str(self.script)], env=self.env, capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        return done.stdout

    def restarts(self) -> list[str]:
        path = self.dir / "restarts"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def health(text: str, tmp_path: Path) -> HealthCheck:
    if not Path("/proc/uptime").exists() or sys.platform != "linux":
        pytest.skip("the health check reads Linux's /proc/uptime")
    check = HealthCheck(text, tmp_path)
    if check.uptime < 300:
        pytest.skip("this machine booted too recently to fake a start long ago")
    return check


def test_health_leaves_a_starting_vllm_alone_within_its_grace(health: HealthCheck) -> None:
    for _ in range(6):
        assert "health check failed" in health.run(healthy=False)
    assert health.restarts() == []
    assert (health.dir / "curls").read_text().split()[-1] == "http://127.0.0.1:8000/health"
    assert health.run(healthy=True) == ""
    assert health.restarts() == []


def test_health_restarts_a_vllm_never_healthy_after_its_grace(health: HealthCheck) -> None:
    health.set(started_ago=200)
    out = health.run(healthy=False)
    assert "not healthy" in out
    assert health.restarts() == ["restart --no-block spotgate-vllm.service"]
    assert not (health.dir / "state").exists()


def test_health_restarts_after_consecutive_failures_once_healthy(health: HealthCheck) -> None:
    health.run(healthy=True)
    health.run(healthy=False)
    health.run(healthy=False)
    health.run(healthy=True)  # a success starts the count again
    health.run(healthy=False)
    health.run(healthy=False)
    assert health.restarts() == []
    assert "3 health checks failed in a row" in health.run(healthy=False)
    assert health.restarts() == ["restart --no-block spotgate-vllm.service"]


def test_health_counts_afresh_after_each_start(health: HealthCheck) -> None:
    health.run(healthy=True)
    health.run(healthy=False)
    health.run(healthy=False)
    health.set(started_ago=5)  # systemd restarted it meanwhile: a new start
    health.run(healthy=False)
    health.run(healthy=False)
    assert health.restarts() == [], "a fresh start is in its grace period again"


def test_health_judges_nothing_while_the_unit_is_not_active(health: HealthCheck) -> None:
    health.set(active=False, started_ago=10_000)
    assert health.run(healthy=False) == ""
    assert health.restarts() == [] and not (health.dir / "curls").exists()

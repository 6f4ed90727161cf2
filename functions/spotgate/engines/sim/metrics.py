"""`/metrics` in vLLM's Prometheus names and labels, so scrapers need no sim special case.

Written by hand rather than with prometheus_client: a handful of numbers do
not justify a global registry, and each app instance keeps its own counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spotgate.engines.sim.scheduler import Scheduler

FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")

_GAUGES = (
    ("vllm:num_requests_running", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."),
)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class SimMetrics:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    request_success: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(FINISH_REASONS, 0)
    )

    def finished(self, reason: str, count: int = 1) -> None:
        self.request_success[reason] = self.request_success.get(reason, 0) + count

    def render(self, model: str, scheduler: Scheduler) -> bytes:
        labels = f'engine="0",model_name="{_label_value(model)}"'
        gauges = (float(scheduler.running), float(scheduler.waiting), scheduler.kv_usage)
        lines: list[str] = []
        for (name, help_text), value in zip(_GAUGES, gauges, strict=True):
            lines += (f"# HELP {name} {help_text}", f"# TYPE {name} gauge")
            lines.append(f"{name}{{{labels}}} {value!r}")
        counters = (
            ("vllm:prompt_tokens_total", "Number of prefill tokens processed.", self.prompt_tokens),
            (
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
                self.generation_tokens,
            ),
        )
        for name, help_text, total in counters:
            lines += (f"# HELP {name} {help_text}", f"# TYPE {name} counter")
            lines.append(f"{name}{{{labels}}} {float(total)!r}")
        name = "vllm:request_success_total"
        lines += (
            f"# HELP {name} Count of successfully processed requests.",
            f"# TYPE {name} counter",
        )
        for reason, total in self.request_success.items():
            reason_label = _label_value(reason)
            lines.append(f'{name}{{{labels},finished_reason="{reason_label}"}} {float(total)!r}')
        lines.append("")
        return "\n".join(lines).encode()

"""Who may call the gateway and what it costs: virtual API keys, limits, budgets, metering."""

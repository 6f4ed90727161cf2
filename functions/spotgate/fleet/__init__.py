"""The fleet core: workers, their states, the registry and the monitor's pure logic."""

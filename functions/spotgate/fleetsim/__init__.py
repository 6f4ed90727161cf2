"""The fleet simulator: traces through the real fleet policy code, in simulated time."""

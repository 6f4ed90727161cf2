"""spotgate.engines.sim."""

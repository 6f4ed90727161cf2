"""spotgate.sim."""

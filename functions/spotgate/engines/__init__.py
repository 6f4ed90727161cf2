"""spotgate.engines."""

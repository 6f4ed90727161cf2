"""spotgate.orchestrations."""

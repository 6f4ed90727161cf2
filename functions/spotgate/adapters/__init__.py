"""spotgate.adapters."""

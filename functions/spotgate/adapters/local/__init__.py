"""spotgate.adapters.local."""

"""The request path: parsing, model resolution, worker selection, proxying and failover."""

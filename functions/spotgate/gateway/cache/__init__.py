"""The response cache: what may be cached (policy), under which key, in which store, and how
a stored answer is replayed as a stream or assembled from one."""

"""The core's helpers that are no concept of fiq-gym's own: atomic files, JSON files read with
a fix in the error, the cache folder, the project's links, thread limits, worker processes and
command-line arguments. Import each from its module; this package re-exports nothing, so
importing one helper imports no other."""

"""Shared state of the service and the workers: settings, dataset paths, the job store and the
change log of live collections, each contract with a Redis and a SQLite backend.

`service/` and `worker/` both stand on this package; it stands on `trainer/` (for its error
types) and never imports either of them."""

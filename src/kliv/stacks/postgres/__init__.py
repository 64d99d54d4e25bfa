"""The native Postgres engine: desired state, catalog, differ, bootstrap SQL, inventory."""

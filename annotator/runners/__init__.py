"""Runners: one engine each (``ray_data``: Ray Data, ``beam``: Apache Beam), thin adapters over the
pipeline's stage functions; ``job`` holds what every runner shares (plan, fingerprint, rounds,
summary), ``ray_cluster`` connecting to Ray, ``checkin`` the actor registry, ``submit`` Ray job
submission. Imported only by the CLI."""

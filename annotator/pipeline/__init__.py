"""The pipeline's mechanics, engine-free: input -> frozen plan -> read -> decode -> infer -> encode
-> shard commit, with the output's layout, lock, fingerprint and counters. Runners (Ray Data, Beam)
call these functions; nothing here imports Ray or Beam. May import labels, temporal, models and
the estimator."""

"""Shared test settings (a plain module: `conftest` names clash between test folders)."""

FAST = dict(n_components=4, hidden=(32, 32), pretrain_epochs=15, max_iter=60, n_init=2,
            batch_size=64)

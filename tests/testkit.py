"""Shared test settings (a plain module: `conftest` names clash between test folders)."""

FAST = dict(n_components=4, hidden=(32, 32), pretrain_epochs=15, max_iter=60, n_init=2,
            init_views=2, batch_size=64)


def listening(processes) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the psutil ``processes`` listen on."""
    import psutil

    out = set()
    for proc in processes:
        try:
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out

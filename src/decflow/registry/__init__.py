"""MLflow: the outage-bounded client, runs and experiments, the logged model and its integrity
manifest, registered versions, the aliases (champion, challenger, previous) and the promotion
gates that decide between them."""

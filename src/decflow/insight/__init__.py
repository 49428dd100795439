"""What a run tells its user: the run report, cluster profiles, drift and churn monitoring,
evaluation scores and the sweep over the number of clusters."""

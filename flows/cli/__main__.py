from decflow.flows.cli import app

app()

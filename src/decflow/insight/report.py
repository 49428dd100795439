"""One self-contained HTML page per nightly run, built from what the run logged to MLflow.

The page reads the run (tags, status, times, metrics), its artifacts (``config.yaml``,
``validation/result.json``, ``alignment/cluster_ids.json``, ``promotion/decision.json``,
``profiles/cluster_profiles.json``, ``monitoring/drift.json``, every PNG under ``plots/``) and the
registered model versions made from it. An artifact that is missing (a first night has no
alignment, an ungated run no decision) gets a "not recorded for this run" line.

Self-contained: inline CSS, pictures as ``data:`` URIs, no script, no font or other asset; a
Content-Security-Policy allows nothing else, so the page shows the same offline, attached to an
email or served from the artifact store. Every value from the run is HTML-escaped.
"""

# Over 500 lines on purpose: one page, read top to bottom as the reader sees it (fetching what
# the run logged, one function per section, the small HTML helpers and the CSS); splitting the
# sections from the helpers they alone use would make a reader jump between files for no gain.

import base64
import contextlib
import datetime as dt
import html
import json
import math
import os
import tempfile
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from decflow import __version__
from decflow.config import PipelineConfig
from decflow.errors import ConfigError
from decflow.files import write_atomic
from decflow.insight.profiles import label_text
from decflow.redaction import redact
from decflow.registry.client import mlflow_client
from decflow.registry.names import Artifact, Tag

FLOW = "recluster"
# Shown first, in this order; every other metric follows by name.
KNOWN_METRICS = ("acc", "nmi", "ari", "silhouette", "mean_confidence", "smallest_cluster_share",
                 "largest_cluster_share", "n_clusters_found", "size_entropy", "label_churn",
                 "label_churn_unaligned", "size_shift_tvd", "size_shift_psi")
# Pictures under plots/ with a caption, in page order; other PNGs follow under their file name.
PLOT_CAPTIONS = {
    "embedding_2d.png": "Map of the clusters (2-D projection of the embedding)",
    "cluster_sizes.png": "Cluster sizes",
    "sizes_vs_last_night.png": "Cluster sizes against last night",
    "confidence.png": "Confidence of the assignments (max q per row)",
    "drift_history.png": "Label churn and size drift over the last nights",
    "training_curves.png": "Training curves (autoencoder pretraining, DEC fine-tuning)",
}
ARTIFACTS = {"config": Artifact.CONFIG, "validation": Artifact.VALIDATION,
             "alignment": Artifact.ALIGNMENT, "promotion": Artifact.PROMOTION,
             "profiles": Artifact.PROFILES, "drift": Artifact.DRIFT}
_PNG = b"\x89PNG\r\n\x1a\n"
_MAX_ITEMS = 5  # features, categories, terms, exemplars per profile cell


def find_run(tracking_uri: str, experiment: str, *, run_date: dt.date | None = None,
             run_id: str | None = None) -> Run:
    """The run a report is about: ``run_id``, else the newest ``recluster`` run of ``run_date``
    (tag ``decflow.run_date``), else the newest ``recluster`` run of ``experiment``.

    Raises:
        ConfigError: both ``run_id`` and ``run_date`` given, or no such run / experiment (the
            message names what was searched, where).
    """
    client = mlflow_client(tracking_uri)
    where = redact(tracking_uri)
    if run_id is not None:
        if run_date is not None:
            raise ConfigError(f"give a run id or a run date, not both (run_id={run_id!r}, "
                              f"run_date={run_date.isoformat()})")
        try:
            return client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise
            raise ConfigError(f"no MLflow run with id {run_id!r} in {where}") from None
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"no MLflow experiment {experiment!r} in {where}: nothing has run "
                          f"there yet, or registry.experiment names another one")
    query = f"tags.`decflow.flow` = '{FLOW}'"
    if run_date is not None:
        query += f" and tags.`decflow.run_date` = '{run_date.isoformat()}'"
    runs = client.search_runs([exp.experiment_id], query, max_results=1,
                              order_by=["attributes.start_time DESC"])
    if not runs:
        night = f" for run date {run_date.isoformat()}" if run_date else ""
        raise ConfigError(f"no {FLOW} run{night} in experiment {experiment!r} of {where} "
                          f"(searched: {query})")
    return runs[0]


def render_report(tracking_uri: str, run_id: str) -> str:
    """The HTML page of run ``run_id`` (a complete document, UTF-8 text)."""
    client = mlflow_client(tracking_uri)
    run = client.get_run(run_id)
    # search results carry no aliases (SQL registry): ask for each version
    versions = [client.get_model_version(mv.name, mv.version)
                for mv in client.search_model_versions(f"run_id='{run_id}'")]
    with tempfile.TemporaryDirectory(prefix="decflow-report-") as tmp, _no_progress_bars():
        files = _download(client, run_id, Path(tmp))
        data = {key: _read(files.get(path), json_=path.endswith(".json"))
                for key, path in ARTIFACTS.items()}
        plots = [(caption, _data_uri(path)) for caption, path in _plot_order(files)]
    tags = run.data.tags
    day = tags.get(Tag.RUN_DATE, "?")
    sections = [
        ("Summary", lambda: _summary(run, versions)),
        ("Data validation", lambda: _validation(data["validation"])),
        ("Metrics", lambda: _metrics(run.data.metrics)),
        ("Promotion", lambda: _promotion(data["promotion"], versions)),
        ("Drift and churn", lambda: _drift(data["drift"], data["alignment"], tags)),
        ("Cluster profiles", lambda: _profiles(data["profiles"])),
        ("Pictures", lambda: _pictures(plots)),
        ("Configuration", lambda: _config(data["config"])),
    ]
    nav = " · ".join(f'<a href="#{_anchor(t)}">{_e(t)}</a>' for t, _ in sections)
    body = f"<nav>{nav}</nav>\n" + "\n".join(_section(t, render) for t, render in sections)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    heading = f"{tags.get('decflow.flow', 'run')} {day}"
    return _PAGE.format(title=_e(f"decflow {heading}: run {run_id[:8]}"), css=_CSS,
                        h1=_e(heading), body=body,
                        footer=_e(f"decflow {__version__}, report made {now}"))


def write_report(tracking_uri: str, experiment: str, out: Path, *,
                 run_date: dt.date | None = None, run_id: str | None = None) -> Path:
    """Render the report of the run ``find_run`` picks and write it to ``out`` atomically
    (readers see the old file or the new one, never a part). Returns ``out``."""
    run = find_run(tracking_uri, experiment, run_date=run_date, run_id=run_id)
    return save_page(render_report(tracking_uri, run.info.run_id), out)


def save_page(page: str, out: Path) -> Path:
    """Write a rendered page to ``out`` whole or not at all (``decflow.files``). Returns
    ``out``."""
    return write_atomic(out, page)


def report_path(config: PipelineConfig, run_date: str) -> Path:
    """Where a run's report goes by default: ``<home>/reports/recluster-<run date>.html``."""
    return Path(config.home) / "reports" / f"recluster-{run_date}.html"


def report_command(config: PipelineConfig, run_date: dt.date | None = None,
                   run_id: str | None = None, out: Path | None = None) -> Path:
    """Write the report of a recluster run (by id, by run date, else the newest); returns
    the file written."""
    uri, experiment = config.tracking_uri(), config.registry.experiment
    run = find_run(uri, experiment, run_date=run_date, run_id=run_id)
    day = run.data.tags.get(Tag.RUN_DATE) or run.info.run_id
    return write_report(uri, experiment, out or report_path(config, day),
                               run_id=run.info.run_id)


def log_report(config: PipelineConfig, run_id: str, out: Path | None = None) -> str:
    """Render the report of ``run_id`` once and log it into that run as
    ``report/report.html`` (and, with ``out``, write the same page there atomically); returns
    the artifact's URI."""
    client = mlflow_client(config.tracking_uri())
    page = render_report(config.tracking_uri(), run_id)
    client.log_text(run_id, page, Artifact.REPORT)
    if out is not None:
        save_page(page, out)
    return f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{Artifact.REPORT}"


# --------------------------------------------------------------------------- reading
@contextlib.contextmanager
def _no_progress_bars():
    """No MLflow download progress bar per artifact (unless the environment asks for them)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    unset = key not in os.environ
    if unset:
        os.environ[key] = "false"
    try:
        yield
    finally:
        if unset:
            os.environ.pop(key, None)


def _download(client, run_id: str, dst: Path) -> dict[str, Path]:
    """The run's artifacts the report reads, downloaded into ``dst``: {artifact path: file}."""
    wanted = set(ARTIFACTS.values())
    listed = {info.path: info.is_dir for info in client.list_artifacts(run_id)}
    paths = [p for p in wanted if "/" not in p and p in listed and not listed[p]]
    for folder in {p.split("/")[0] for p in wanted if "/" in p}:
        if listed.get(folder):
            paths += [i.path for i in client.list_artifacts(run_id, folder)
                      if not i.is_dir and i.path in wanted]
    if listed.get(Artifact.PLOTS):
        paths += _pngs(client, run_id, Artifact.PLOTS)
    return {p: Path(client.download_artifacts(run_id, p, str(dst))) for p in paths}


def _pngs(client, run_id: str, folder: str) -> list[str]:
    """Every ``.png`` under ``folder`` (sub-folders too)."""
    out = []
    for info in client.list_artifacts(run_id, folder):
        if info.is_dir:
            out += _pngs(client, run_id, info.path)
        elif info.path.lower().endswith(".png"):
            out.append(info.path)
    return out


def _read(path: Path | None, json_: bool):
    """The file's JSON (or text); None when absent; an ``_Unreadable`` when it cannot be read."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if json_ else text
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _Unreadable(f"{type(exc).__name__}: {exc}")


class _Unreadable(str):
    """Why an artifact that exists could not be read."""


def _plot_order(files: dict[str, Path]) -> list[tuple[str, Path]]:
    """(caption, file) of every PNG under plots/: known names first, in page order."""
    pngs = {p.removeprefix(Artifact.PLOTS + "/"): f for p, f in files.items()
            if p.startswith(Artifact.PLOTS + "/")}
    known = [(PLOT_CAPTIONS[n], pngs[n]) for n in PLOT_CAPTIONS if n in pngs]
    return known + [(n, pngs[n]) for n in sorted(pngs) if n not in PLOT_CAPTIONS]


def _data_uri(path: Path) -> str | None:
    """A ``data:image/png;base64,...`` URI; None when the file is not a PNG."""
    raw = path.read_bytes()
    if not raw.startswith(_PNG):
        return None
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


# --------------------------------------------------------------------------- sections
def _section(title: str, render) -> str:
    """One ``<section>``; data of an unexpected shape gives a line saying so, not a crash."""
    try:
        inner = render()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        inner = _missing(f"could not be shown ({type(exc).__name__}: {exc})")
    return f'<section id="{_anchor(title)}">\n<h2>{_e(title)}</h2>\n{inner}\n</section>'


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def _summary(run: Run, versions) -> str:
    info, tags = run.info, run.data.tags
    rows = [("Run date", tags.get(Tag.RUN_DATE)),
            ("Status", _badge("RUNNING (this page was its last step)", None)
             if info.status == "RUNNING" else _badge(info.status, info.status == "FINISHED")),
            ("Started", _time(info.start_time)), ("Ended", _time(info.end_time)),
            ("Duration", _duration(info.start_time, info.end_time)),
            ("MLflow run", _Html(f"{_e(info.run_name or '')} <code>{_e(info.run_id)}</code>")),
            ("Training window rows", tags.get(Tag.DATA_N_ROWS)),
            ("Labels written (rows)", _labels_rows(run.data.metrics)),
            ("Labelled with champion version", tags.get(Tag.CHAMPION_VERSION)),
            ("Promotion", tags.get(Tag.PROMOTION_DECISION)),
            ("Drift alert", tags.get(Tag.MONITORING_ALERT)),
            ("Warm start", tags.get(Tag.WARM_START)),
            ("decflow version", tags.get(Tag.VERSION))]
    for mv in versions:
        aliases = ", ".join(sorted(mv.aliases)) or "no alias"
        rows.append(("Model version", f"{mv.name} version {mv.version} ({aliases})"))
    rows += [(f"Labels: {k.removeprefix('labels.')}", v) for k, v in sorted(tags.items())
             if k.startswith("labels.")]
    url = tags.get(Tag.PREFECT_FLOW_RUN_URL, "")
    if url.startswith(("http://", "https://")):
        name = tags.get(Tag.PREFECT_FLOW_RUN_NAME, url)
        rows.append(("Prefect flow run", _Html(f'<a href="{_e(url)}">{_e(name)}</a>')))
    error = tags.get(Tag.ERROR)
    banner = (f'<div class="banner error" role="alert"><strong>The run failed:</strong> '
              f'{_e(error)}</div>\n' if error else "")
    return banner + _kv([(k, _cell(v)) for k, v in rows if v is not None])


def _labels_rows(metrics: dict[str, float]) -> int | None:
    rows = metrics.get("labels_rows")
    return int(rows) if rows is not None and math.isfinite(rows) else None


def _validation(report) -> str:
    if not isinstance(report, dict):
        return _absent(Artifact.VALIDATION, report)
    head = (f"<p>{_badge('passed' if report.get('success') else 'FAILED', report.get('success'))}"
            f" {_e(report.get('n_failed', '?'))} of {_e(report.get('n_expectations', '?'))} "
            f"expectations failed on {_e(report.get('n_rows', '?'))} rows.</p>")
    rows = [[r.get("expectation"), r.get("column") or "(table)",
             _badge("passed" if r.get("success") else "failed", r.get("success")),
             r.get("details"), _json_short(r.get("sample")), ", ".join(r.get("partitions") or [])]
            for r in sorted(report.get("results", []), key=lambda r: bool(r.get("success")))]
    return head + _table(["expectation", "column", "result", "details", "sample", "partitions"],
                         rows)


def _metrics(metrics: dict[str, float]) -> str:
    if not metrics:
        return _missing("no metrics recorded for this run")
    names = [m for m in KNOWN_METRICS if m in metrics]
    names += sorted(m for m in metrics if m not in KNOWN_METRICS)
    return _table(["metric", "value"], [[n, metrics[n]] for n in names], cls="metrics")


def _promotion(decision, versions) -> str:
    parts = []
    if isinstance(decision, dict):
        verdict = decision.get("decision", "?")
        parts.append(f"<p>{_badge(verdict, verdict != 'reject')} "
                     f"{_e(decision.get('summary', ''))}</p>")
        parts += [f'<div class="banner note">{_e(n)}</div>' for n in decision.get("notes") or []]
        parts.append(_kv([(k, _cell(decision.get(k))) for k in
                          ("candidate", "champion", "n_rows", "evaluated_at")]))
        parts.append(_table(["gate", "result", "value", "threshold", "detail"], [
            [g.get("name"), _badge("pass" if g.get("passed") else "fail", g.get("passed")),
             g.get("value"), g.get("threshold"), g.get("detail")]
            for g in decision.get("gates", [])]))
    else:
        parts.append(_absent(Artifact.PROMOTION, decision))
    for mv in versions:
        promo = sorted((k, v) for k, v in mv.tags.items() if k.startswith("promotion."))
        parts.append(f"<h3>{_e(mv.name)} version {_e(mv.version)}: aliases "
                     f"{_e(', '.join(sorted(mv.aliases)) or 'none')}</h3>")
        parts.append(_kv([(k, _cell(v)) for k, v in promo]) if promo
                     else _missing("no promotion tags on this version"))
    if not versions:
        parts.append(_missing("no registered model version from this run"))
    return "\n".join(parts)


def _drift(drift, alignment, tags: dict[str, str]) -> str:
    parts = []
    if isinstance(drift, dict):
        alerts = drift.get("alerts") or []
        if alerts:
            items = "".join(f"<li>{_cell(a)}</li>" for a in alerts)
            parts.append(f'<div class="banner alert" role="alert"><strong>Drift alert '
                         f'({len(alerts)}):</strong><ul>{items}</ul></div>')
        parts.append(_cell({k: v for k, v in drift.items() if k != "alerts"}))
    else:
        parts.append(_absent(Artifact.DRIFT, drift))
    parts.append("<h3>Cluster id alignment</h3>")
    if isinstance(alignment, dict):
        parts.append(_cell(alignment))
    elif alignment is None and tags.get(Tag.ALIGNMENT_REFERENCE_VERSION) == "none":
        parts.append(_missing("no champion to align with (first night): not recorded for "
                              "this run"))
    elif alignment is None and tags.get(Tag.ALIGNMENT_SKIPPED):
        parts.append(_missing(f"skipped: {tags['alignment.skipped']}"))
    else:
        parts.append(_absent(Artifact.ALIGNMENT, alignment))
    return "\n".join(parts)


def _profiles(profiles) -> str:
    if not isinstance(profiles, dict):
        return _absent(Artifact.PROFILES, profiles)
    clusters = profiles.get("clusters", [])
    text_columns = {t.get("column") for c in clusters for t in c.get("terms", [])}
    header = ["cluster", "size", "share", "mean confidence", "distinguishing features",
              "over-represented categories", "top terms", "exemplar ids", "most common label"]
    table = []
    for c in clusters:
        share = c.get("share") or 0.0
        bar = (f'{share:.1%}<span class="bar"><span style="width:{min(share, 1.0) * 100:.1f}%">'
               f'</span></span>')
        terms = sorted(c.get("terms", []), key=lambda t: -t.get("score", 0))[:_MAX_ITEMS]
        cats = sorted(c.get("categories", []), key=lambda g: -g.get("lift", 0))[:_MAX_ITEMS]
        table.append([c.get("cluster_id"), c.get("size"), _Html(bar), c.get("mean_confidence"),
                      ", ".join(f"{f['feature']} {f['value']:+.1f}σ"
                                for f in c.get("numeric", [])[:_MAX_ITEMS]),
                      ", ".join(f"{g['column']}={g['category']} ×{g['lift']:.1f}" for g in cats),
                      ", ".join(t["term"] if len(text_columns) < 2
                                else f"{t['column']}:{t['term']}" for t in terms),
                      ", ".join(str(e) for e in c.get("exemplars", [])[:_MAX_ITEMS]),
                      label_text(c)])
    # Columns no cluster has anything in (no categorical, text or label column) are left out.
    keep = [j for j in range(len(header)) if j < 4 or any(row[j] != "" for row in table)]
    rows = ['<tr class="cluster-row">' + "".join(f"<td>{_cell(row[j])}</td>" for j in keep)
            + "</tr>" for row in table]
    head = "".join(f"<th>{_e(header[j])}</th>" for j in keep)
    return (f"<p>{_e(profiles.get('n_clusters', len(clusters)))} clusters of "
            f"{_e(profiles.get('n_rows', '?'))} training rows.</p>\n"
            f'<table class="profiles"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table>")


def _pictures(plots: list[tuple[str, str | None]]) -> str:
    if not plots:
        return _missing("no pictures (plots/*.png) recorded for this run")
    figures = []
    for caption, uri in plots:
        img = (f'<img src="{uri}" alt="{_e(caption)}">' if uri
               else _missing("not a PNG file: not shown"))
        figures.append(f"<figure>{img}<figcaption>{_e(caption)}</figcaption></figure>")
    return '<div class="pictures">\n' + "\n".join(figures) + "\n</div>"


def _config(text) -> str:
    if not isinstance(text, str) or isinstance(text, _Unreadable):
        return _absent(Artifact.CONFIG, text)
    return (f"<details><summary>config.yaml (secrets redacted)</summary>"
            f"<pre>{_e(text)}</pre></details>")


# --------------------------------------------------------------------------- formatting
class _Html(str):
    """Markup made here (already escaped)."""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _missing(text: str) -> _Html:
    return _Html(f'<p class="missing">{_e(text)}</p>')


def _absent(path: str, value) -> _Html:
    if isinstance(value, _Unreadable):
        return _missing(f"{path} could not be read: {value}")
    if value is not None:
        return _missing(f"{path} is not what a report expects (a {type(value).__name__})")
    return _missing(f"{path}: not recorded for this run")


def _badge(text, ok: bool | None) -> _Html:
    """A coloured label: green (ok), red (not ok), grey (None: not a verdict)."""
    kind = "neutral" if ok is None else "ok" if ok else "bad"
    return _Html(f'<span class="badge {kind}">{_e(text)}</span>')


def _cell(value, depth: int = 0) -> str:
    """Any JSON value as escaped HTML: numbers to 4 significant digits, dicts as key/value
    tables, lists of dicts as tables, other lists comma-separated."""
    if isinstance(value, _Html):
        return value
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _e(f"{value:.4g}")
    if isinstance(value, (int, str)):
        return _e(value)
    if depth > 3:
        return f"<code>{_e(_json_short(value))}</code>"
    if isinstance(value, dict):
        return _kv([(k, _cell(v, depth + 1)) for k, v in value.items()]) if value else "—"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            return _table(keys, [[_Html(_cell(v.get(k), depth + 1)) for k in keys]
                                 for v in value])
        return ", ".join(_cell(v, depth + 1) for v in value) or "—"
    return _e(value)


def _kv(rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _table(header, rows, cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                     for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead>\n<tbody>{body}</tbody></table>'


def _json_short(value, limit: int = 300) -> str:
    if not value:
        return ""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _time(ms: int | None) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(start: int | None, end: int | None) -> str | None:
    if not start:
        return None
    if not end:
        return "still running"
    s = max(0, end - start) / 1000
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1200px;padding:1rem 2rem;color:#1d2330;background:#fff;line-height:1.4}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #dde2ea;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}
th,td{border:1px solid #dde2ea;padding:.25rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f2f4f8}table.kv th{background:#f7f8fb;font-weight:600;white-space:nowrap}
table.metrics td:last-child,table.profiles td:nth-child(-n+4){text-align:right;
font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.88rem}
pre{background:#f7f8fb;padding:.75rem;overflow:auto;max-height:40rem}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-weight:600;
font-size:.85rem}.badge.ok{background:#dff3e4;color:#14532d}
.badge.neutral{background:#e5e7eb;color:#1f2937}.badge.bad{background:#fde2e2;
color:#7f1d1d}.banner{padding:.6rem .9rem;border-radius:.3rem;margin:.5rem 0}
.banner.error,.banner.alert{background:#fde2e2;border:1px solid #f5a3a3}
.banner.note{background:#fff6d6;border:1px solid #f1d67a}.missing{color:#6b7280;font-style:italic}
.bar{display:inline-block;width:4rem;height:.6rem;background:#eef1f6;margin-left:.4rem}
.bar span{display:block;height:100%;background:#4f7cc3}
.pictures{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1rem}
figure{margin:0;border:1px solid #dde2ea;padding:.5rem}img{max-width:100%;height:auto}
nav{font-size:.9rem;color:#6b7280}nav a{color:#2f5fa8}
figcaption{color:#4b5563;font-size:.9rem;margin-top:.3rem}footer{color:#6b7280;margin:2rem 0}
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1>decflow {h1}</h1></header>
{body}
<footer>{footer}</footer>
</body>
</html>
"""

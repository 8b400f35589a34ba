"""HTML of the emulator's dashboard pages, rendered on the server.

Every page is built from :class:`markupsafe.Markup` templates whose
``format`` escapes each argument that is not already markup, so a value
from the store (a definition name, a description, an environment value, a
statistics key) can only ever reach the page as text: escaping is the
default, not a call someone must remember. markupsafe comes with werkzeug
(the emulator's one web dependency), so no template engine is added.

Dynamic parts (charts, the latest statistics, the status while a job runs)
are drawn and refreshed by ``static/dashboard.js``; what the server renders
is complete without the script except for the charts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from markupsafe import Markup

from ..statistics_rules import progress_fraction

__all__ = [
    "Paging",
    "compare_page",
    "definition_page",
    "definitions_page",
    "error_page",
    "job_page",
    "login_page",
    "safe_next",
]

STATIC = "/_dashboard/static"
_STAGE_ORDER = ("train", "validation")
_HEAD_KEYS = ("epoch", "num_epochs", "progress_percentage", "stages")

M = Markup


@dataclass(frozen=True)
class Paging:
    """The page numbers of a definition page's three tables (1-based)."""

    page: int = 1
    vpage: int = 1
    mpage: int = 1

    def query(self, **change: int) -> str:
        """The query string for these pages with ``change`` applied (defaults left out)."""
        values = replace(self, **change)
        pairs = [(k, getattr(values, k)) for k in ("page", "vpage", "mpage")]
        return urlencode([(k, n) for k, n in pairs if n != 1])


def safe_next(target: str) -> str:
    """A same-site path to go to after the login form, else ``/`` (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return "/"
    return target


# -- small formatters ------------------------------------------------------------


def _path(*segments: str) -> str:
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _value(value: Any) -> str:
    """A stored value as text: strings as they are, everything else as JSON."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _time(value: str | None, element_id: str = "") -> Markup:
    ident = M(' id="{}"').format(element_id) if element_id else M("")
    if not value:
        return M("<span{}>—</span>").format(ident)
    shown = value[:19].replace("T", " ") + " UTC"
    return M('<time{} datetime="{}">{}</time>').format(ident, value, shown)


def _duration(start: str | None, end: str | None) -> str:
    begin = _parse_time(start)
    if begin is None:
        return "—"
    finish = _parse_time(end) or datetime.now(timezone.utc)
    seconds = max(0, int((finish - begin).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _status(status: str | None, element_id: str = "") -> Markup:
    ident = M(' id="{}"').format(element_id) if element_id else M("")
    text = status or "—"
    return M('<span{} class="status status-{}">{}</span>').format(ident, text, text)


def _short(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_text(statistics: Mapping[str, Any] | None) -> str:
    """``epoch 3/10 · 30 %`` for a statistics document (the same text the script writes)."""
    if not statistics:
        return "no statistics yet"
    parts: list[str] = []
    epoch, total = statistics.get("epoch"), statistics.get("num_epochs")
    if isinstance(epoch, int):
        parts.append(f"epoch {epoch}/{total}" if isinstance(total, int) else f"epoch {epoch}")
    fraction = statistics.get("progress_percentage")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
        parts.append(f"{fraction * 100:.0f} %")
    return " · ".join(parts) if parts else "—"


def _flatten(value: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    """``(path, value)`` leaves; a list of objects (``system.gpus``) gives ``gpus[0].x`` rows."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for position, inner in enumerate(value):
            yield from _flatten(inner, f"{prefix}[{position}]")
    else:
        yield prefix, value


def statistics_rows(statistics: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """``(stage, metric, value)`` rows of a document: stages first, then other values."""
    if not statistics:
        return []
    rows: list[tuple[str, str, str]] = []
    stages = statistics.get("stages")
    if isinstance(stages, Mapping):
        names = [s for s in _STAGE_ORDER if s in stages]
        names += [s for s in stages if s not in _STAGE_ORDER]
        for stage in names:
            for metric, value in _flatten(stages[stage], ""):
                rows.append((stage, metric, _value(value)))
    for key, value in statistics.items():
        if key in _HEAD_KEYS:
            continue
        for metric, inner in _flatten(value, key):
            rows.append(("", metric, _value(inner)))
    return rows


def _table(headers: Sequence[str], rows: Iterable[Markup], *, ident: str = "") -> Markup:
    head = M("").join(M("<th>{}</th>").format(h) for h in headers)
    body = M("").join(rows)
    ident_attr = M(' id="{}"').format(ident) if ident else M("")
    if not body:
        body = M('<tr class="empty"><td colspan="{}">none</td></tr>').format(len(headers))
    return M("<table{}><thead><tr>{}</tr></thead><tbody>{}</tbody></table>").format(
        ident_attr, head, body
    )


def _dl(items: Iterable[tuple[str, Any]]) -> Markup:
    return M('<dl class="facts">{}</dl>').format(
        M("").join(M("<dt>{}</dt><dd>{}</dd>").format(k, val) for k, val in items)
    )


def _mapping_table(values: Mapping[str, Any], key_header: str) -> Markup:
    rows = (
        M("<tr><td>{}</td><td>{}</td></tr>").format(k, _value(val)) for k, val in values.items()
    )
    return _table([key_header, "value"], rows)


def _pager(label: str, page: int, total: int, per_page: int, link: Any) -> Markup:
    pages = max(1, -(-total // per_page))
    if pages == 1:
        return M("")
    prev = M('<a rel="prev" href="{}">← newer</a>').format(link(page - 1)) if page > 1 else M("")
    nxt = M('<a rel="next" href="{}">older →</a>').format(link(page + 1)) if page < pages else M("")
    return M(
        '<nav class="pager" aria-label="{}">{} <span>page {} of {} ({} in all)</span> {}</nav>'
    ).format(label, prev, page, pages, total, nxt)


# -- layout ----------------------------------------------------------------------


def _layout(
    title: str,
    body: Markup,
    *,
    page: str,
    crumbs: Sequence[tuple[str, str | None]] = (),
    data: Mapping[str, str] | None = None,
    logged_in: bool = True,
    charts: bool = False,
) -> str:
    trail = M(" / ").join(
        M('<a href="{}">{}</a>').format(href, text) if href else M("<span>{}</span>").format(text)
        for text, href in [("Definitions", "/"), *crumbs]
    )
    attrs = M("").join(M(' data-{}="{}"').format(k, val) for k, val in (data or {}).items())
    logout = (
        M(
            '<form class="logout" method="post" action="/_dashboard/logout">'
            '<button type="submit">Log out</button></form>'
        )
        if logged_in
        else M("")
    )
    uplot = (
        M(
            '<link rel="stylesheet" href="{0}/vendor/uplot/uPlot.min.css">'
            '<script src="{0}/vendor/uplot/uPlot.iife.min.js" defer></script>'
        ).format(STATIC)
        if charts
        else M("")
    )
    document = M(
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        "<title>{title} · abeja-runtime emulator</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="{static}/dashboard.css">{uplot}'
        '<script src="{static}/dashboard.js" defer></script>'
        "</head><body>"
        '<header><a class="brand" href="/">abeja-runtime emulator</a>'
        '<nav class="crumbs">{trail}</nav>{logout}</header>'
        '<main data-page="{page}"{attrs}><h1>{title}</h1>{body}</main>'
        "<footer>Local Training API emulator · charts by "
        '<a href="{static}/vendor/uplot/LICENSE">uPlot (MIT)</a></footer>'
        "</body></html>\n"
    )
    return str(
        document.format(
            title=title,
            static=STATIC,
            uplot=uplot,
            trail=trail if crumbs else M(""),
            logout=logout,
            page=page,
            attrs=attrs,
            body=body,
        )
    )


def login_page(next_path: str, *, failed: bool = False) -> str:
    """The token form (also what every page is without a session: a 401)."""
    message = (
        M('<p class="error" id="login-message">That is not this emulator\'s token.</p>')
        if failed
        else M('<p id="login-message"></p>')
    )
    body = M(
        "<p>This dashboard shows the emulator's jobs to whoever holds its token. Open it "
        "through the link <code>abeja-runtime emulator</code> prints, or paste the token "
        "(<code>PLATFORM_AUTH_TOKEN</code>) here.</p>{message}"
        '<form id="login-form" method="post" action="/_dashboard/login">'
        '<input type="hidden" name="next" value="{next}">'
        '<label>Token <input type="password" name="token" autocomplete="current-password" '
        'required autofocus></label> <button type="submit">Log in</button></form>'
    ).format(message=message, next=safe_next(next_path))
    return _layout("Log in", body, page="login", logged_in=False)


def error_page(status: int, description: str) -> str:
    """A page for a 4xx/5xx the dashboard answers (not found, bad request)."""
    body = M('<p class="error">{}</p><p><a href="/">All definitions</a></p>').format(description)
    return _layout(f"Error {status}", body, page="error")


# -- pages -----------------------------------------------------------------------


def definitions_page(summaries: Mapping[str, Any], page: int) -> str:
    """``/``: one row per definition."""
    rows = (
        M(
            '<tr><td><a href="{href}">{name}</a>{archived}</td><td class="num">{versions}</td>'
            '<td class="num">{jobs}</td><td class="num">{models}</td><td>{latest}</td>'
            "<td>{modified}</td></tr>"
        ).format(
            href=_path("definitions", d["name"]),
            name=d["name"],
            archived=M(' <span class="tag">archived</span>') if d["archived"] else M(""),
            versions=d["version_count"],
            jobs=d["job_count"],
            models=d["model_count"],
            latest=(
                M('<a href="{}">{}</a>').format(
                    _path("definitions", d["name"], "jobs", d["latest_job_id"]),
                    _status(d["latest_job_status"]),
                )
                if d["latest_job_id"]
                else M("—")
            ),
            modified=_time(d["modified_at"]),
        )
        for d in summaries["entries"]
    )
    table = _table(
        ["definition", "versions", "jobs", "models", "latest job", "modified"],
        rows,
        ident="definitions",
    )
    pager = _pager(
        "definitions",
        page,
        summaries["total"],
        summaries["limit"],
        lambda n: f"/?{urlencode({'page': n})}",
    )
    if not summaries["total"]:
        table = M(
            "<p>No training job definitions yet. Run a training with "
            "<code>abeja-runtime run</code> or create one through the API.</p>"
        )
    return _layout("Training job definitions", table + pager, page="definitions")


def _job_row(name: str, job: Mapping[str, Any], selectable: bool) -> Markup:
    job_id = job["training_job_id"]
    check = (
        M('<td><input type="checkbox" name="jobs" value="{}" aria-label="compare {}"></td>').format(
            job_id, job_id
        )
        if selectable
        else M("")
    )
    return M(
        '<tr>{check}<td><a href="{href}">{id}</a>{archived}</td><td class="num">{version}</td>'
        "<td>{status}</td><td>{progress}</td><td>{description}</td><td>{created}</td>"
        "<td>{duration}</td></tr>"
    ).format(
        check=check,
        href=_path("definitions", name, "jobs", job_id),
        id=job_id,
        archived=M(' <span class="tag">archived</span>') if job["archived"] else M(""),
        version=job["job_definition_version"],
        status=_status(job["status"]),
        progress=progress_text(job["statistics"]),
        description=_short(job["description"]),
        created=_time(job["created_at"]),
        duration=_duration(job["start_time"], job["completion_time"]),
    )


def _models_table(name: str, models: Mapping[str, Any], *, ident: str) -> Markup:
    rows = (
        M(
            "<tr><td>{id}{archived}</td><td>{job}</td><td>{description}</td>"
            '<td class="num">{size}</td><td><code title="{sha}">{sha_short}</code></td>'
            "<td>{metrics}</td><td>{created}</td>"
            '<td><a class="download" href="{download}" download>download</a></td></tr>'
        ).format(
            id=m["training_model_id"],
            archived=M(' <span class="tag">archived</span>') if m["archived"] else M(""),
            job=(
                M('<a href="{}">{}</a>').format(
                    _path("definitions", name, "jobs", m["training_job_id"]),
                    m["training_job_id"],
                )
                if m["training_job_id"]
                else M("—")
            ),
            description=_short(m["description"]),
            size=f"{m['size']:,} B",
            sha=m["sha256"],
            sha_short=m["sha256"][:12],
            metrics=_short(_value(m["metrics"]) if m["metrics"] else "", 120),
            created=_time(m["created_at"]),
            download=_path("definitions", name, "models", m["training_model_id"], "download"),
        )
        for m in models["entries"]
    )
    return _table(
        ["model", "job", "description", "size", "sha256", "metrics", "created", ""],
        rows,
        ident=ident,
    )


def definition_page(
    definition: Mapping[str, Any],
    versions: Mapping[str, Any],
    jobs: Mapping[str, Any],
    models: Mapping[str, Any],
    paging: Paging,
) -> str:
    """``/definitions/<name>``: versions, jobs (paged, newest first) and models."""
    name = definition["name"]
    base = _path("definitions", name)

    def link(**change: int) -> str:
        query = paging.query(**change)
        return f"{base}?{query}" if query else base

    facts = _dl(
        [
            ("id", definition["job_definition_id"]),
            ("created", _time(definition["created_at"])),
            ("modified", _time(definition["modified_at"])),
            ("archived", "yes" if definition["archived"] else "no"),
        ]
    )
    version_rows = (
        M(
            '<tr><td class="num">{n}{archived}</td><td><code>{handler}</code></td>'
            "<td>{image}</td><td>{description}</td><td>{environment}</td><td>{created}</td></tr>"
        ).format(
            n=ver["job_definition_version"],
            archived=M(' <span class="tag">archived</span>') if ver["archived"] else M(""),
            handler=ver["handler"],
            image=ver["image"],
            description=_short(ver["description"]),
            environment=_short(_value(ver["environment"]) if ver["environment"] else "", 120),
            created=_time(ver["created_at"]),
        )
        for ver in versions["entries"]
    )
    job_rows = [_job_row(name, job, True) for job in jobs["entries"]]
    jobs_table = _table(
        ["", "job", "version", "status", "progress", "description", "created", "duration"],
        job_rows,
        ident="jobs",
    )
    compare = M(
        '<form id="compare-form" method="get" action="{action}">{table}'
        '<p><button type="submit">Compare selected jobs</button></p></form>'
    ).format(action=f"{base}/compare", table=jobs_table)
    body = M(
        "{facts}"
        '<section><h2>Jobs <span class="count">{job_total}</span></h2>{compare}{job_pager}'
        "</section>"
        '<section><h2>Versions <span class="count">{version_total}</span></h2>{versions}'
        "{version_pager}</section>"
        '<section><h2>Models <span class="count">{model_total}</span></h2>{models}'
        "{model_pager}</section>"
    ).format(
        facts=facts,
        job_total=jobs["total"],
        compare=compare,
        job_pager=_pager("jobs", paging.page, jobs["total"], jobs["limit"], lambda n: link(page=n)),
        version_total=versions["total"],
        versions=_table(
            ["version", "handler", "image", "description", "environment", "created"],
            version_rows,
            ident="versions",
        ),
        version_pager=_pager(
            "versions",
            paging.vpage,
            versions["total"],
            versions["limit"],
            lambda n: link(vpage=n),
        ),
        model_total=models["total"],
        models=_models_table(name, models, ident="models"),
        model_pager=_pager(
            "models", paging.mpage, models["total"], models["limit"], lambda n: link(mpage=n)
        ),
    )
    return _layout(name, body, page="definition", crumbs=[(name, None)])


def _statistics_table(statistics: Mapping[str, Any] | None) -> Markup:
    rows = (
        M("<tr><td>{}</td><td>{}</td><td>{}</td></tr>").format(stage or "—", metric, value)
        for stage, metric, value in statistics_rows(statistics)
    )
    return _table(["stage", "metric", "value"], rows, ident="latest-statistics")


def job_page(
    name: str, job: Mapping[str, Any], models: Mapping[str, Any], statistics_url: str
) -> str:
    """``/definitions/<name>/jobs/<id>``: the job, its live charts and its models."""
    job_id = job["training_job_id"]
    statistics = job["statistics"]
    fraction = progress_fraction(statistics) or 0
    facts = _dl(
        [
            ("status", _status(job["status"], "job-status")),
            (
                "status message",
                M('<span id="job-status-message">{}</span>').format(job["status_message"] or "—"),
            ),
            ("version", job["job_definition_version"]),
            ("instance type", job["instance_type"]),
            ("exec env", job["exec_env"]),
            ("description", job["description"] or "—"),
            ("created", _time(job["created_at"])),
            ("started", _time(job["start_time"], "job-start")),
            ("completed", _time(job["completion_time"], "job-completion")),
            (
                "duration",
                M('<span id="job-duration">{}</span>').format(
                    _duration(job["start_time"], job["completion_time"])
                ),
            ),
        ]
    )
    body = M(
        "{facts}"
        '<section><h2>Progress</h2><p><progress id="job-progress" max="1" value="{fraction}">'
        '</progress> <span id="job-progress-text">{progress}</span></p></section>'
        '<section><h2>Charts</h2><p class="hint">x: epochs, fractional within an epoch '
        "(progress_percentage * num_epochs; else the epoch; else the report's number). "
        "One chart per numeric statistic, one line per stage or per list element "
        "(per GPU); units from the name (_percent, _bytes, _c, _w); "
        "NaN and ±Infinity are gaps.</p>"
        '<div id="charts" class="charts"><p class="empty" id="charts-empty">'
        "no numeric statistics yet</p></div></section>"
        "<section><h2>Latest statistics</h2>{latest}</section>"
        "<section><h2>Parameters</h2><h3>environment</h3>{environment}"
        "<h3>datasets</h3>{datasets}</section>"
        "<section><h2>Models</h2>{models}</section>"
    ).format(
        facts=facts,
        fraction=fraction,
        progress=progress_text(statistics),
        latest=_statistics_table(statistics),
        environment=_mapping_table(job["environment"], "name"),
        datasets=_mapping_table(job["datasets"], "alias"),
        models=_models_table(name, models, ident="job-models"),
    )
    return _layout(
        f"Job {job_id}",
        body,
        page="job",
        crumbs=[(name, _path("definitions", name)), (job_id, None)],
        data={"statistics-url": statistics_url, "job-id": job_id, "status": job["status"]},
        charts=True,
    )


def compare_page(name: str, jobs: Sequence[Mapping[str, Any]], urls: Sequence[str]) -> str:
    """``/definitions/<name>/compare?jobs=a,b``: the jobs' statistics overlaid."""
    items = M("").join(
        M(
            '<li class="compare-job" data-job-id="{id}" data-statistics-url="{url}">'
            '<span class="swatch"></span><a href="{href}">{id}</a> {status} '
            "<span>{progress}</span> <span>{description}</span></li>"
        ).format(
            id=job["training_job_id"],
            url=url,
            href=_path("definitions", name, "jobs", job["training_job_id"]),
            status=_status(job["status"]),
            progress=progress_text(job["statistics"]),
            description=_short(job["description"]),
        )
        for job, url in zip(jobs, urls, strict=True)
    )
    if not jobs:
        body = M(
            '<p>Pick jobs to compare on the <a href="{}">definition page</a>, or add '
            "<code>?jobs=&lt;id&gt;,&lt;id&gt;</code> to this address.</p>"
        ).format(_path("definitions", name))
    else:
        body = M(
            '<ul id="compare-jobs">{items}</ul>'
            '<p class="hint">One chart per stage and statistic, one line per job; x: epochs '
            "(as on a job's page).</p>"
            '<div id="charts" class="charts"><p class="empty" id="charts-empty">'
            "no numeric statistics yet</p></div>"
        ).format(items=items)
    return _layout(
        "Compare jobs",
        body,
        page="compare",
        crumbs=[(name, _path("definitions", name)), ("compare", None)],
        charts=True,
    )

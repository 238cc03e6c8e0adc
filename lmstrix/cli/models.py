"""CLI commands over the registry and the hosts: ``scan``, ``list`` and ``hosts``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from lmstrix.cli.cells import one_line
from lmstrix.cli.errors import AUTH_REFUSED, NO_HOST_ANSWERED, confirm, handle_errors, yes_option
from lmstrix.cli.model_table import models_table
from lmstrix.cli.output import echo_json
from lmstrix.cli.tables import fitted_table, print_table, wide_option
from lmstrix.core.config import Config
from lmstrix.core.models import ModelRegistry
from lmstrix.core.scanner import HostScan, Scanner
from lmstrix.domain.enums import TestStatus
from lmstrix.domain.errors import ValidationError
from lmstrix.domain.host_capabilities import capability_labels
from lmstrix.domain.model import Model

# Sort keys; None means "not known" and sorts last in either direction.
SORT_KEYS: dict[str, Callable[[Model], Any]] = {
    "id": lambda m: m.id.lower(),
    "host": lambda m: (m.host, m.id.lower()),
    "size": lambda m: m.size_bytes,
    "declared": lambda m: m.declared_context,
    "ctx": lambda m: m.tested_context,
    "tps": lambda m: m.tokens_per_second,
    "ttft": lambda m: m.time_to_first_token,
    "status": lambda m: (m.test_status, m.id.lower()),
}
FILTER_KEYS = ("status", "host", "type", "capability", "min_context")
STATUSES = tuple(s.value for s in TestStatus)
CAPABILITIES = ("vision", "tools", "reasoning")
# Filters that may be given more than once: statuses (any of them), capabilities (all of
# them), min_context (the largest).
REPEATABLE = ("status", "capability", "min_context")


def sort_models(models: Sequence[Model], sort_key: str, *, desc: bool = False) -> list[Model]:
    """Sorted by ``SORT_KEYS[sort_key]``; models without a value come last either way, by id."""
    key = SORT_KEYS[sort_key]
    known = [m for m in models if key(m) is not None]
    unknown = sorted((m for m in models if key(m) is None), key=lambda m: m.id.lower())
    return sorted(known, key=key, reverse=desc) + unknown


def parse_filters(items: Sequence[str]) -> dict[str, Any]:
    """``status=tested`` style filters into ``ModelRegistry.filter_models`` keywords."""
    out: dict[str, Any] = {}
    for item in items:
        key = item.partition("=")[0].strip().replace("-", "_")
        if key in out and key not in REPEATABLE:
            raise ValidationError(
                "--filter", item, f"{key} is given twice; a model has one {key}: keep one"
            )
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in FILTER_KEYS or not value.strip():
            raise ValidationError(
                "--filter", item, f"use KEY=VALUE with KEY one of {', '.join(FILTER_KEYS)}"
            )
        value = value.strip()
        if key == "min_context":
            try:
                out[key] = max(int(value), out.get(key, 0))  # repeated: the largest
            except ValueError:
                raise ValidationError("--filter min_context", value, "must be an integer") from None
        elif key == "status":
            statuses = [v.strip() for v in value.split(",")]
            bad = [v for v in statuses if v not in STATUSES]
            if bad:
                raise ValidationError(
                    "--filter status", bad[0], f"use one of {', '.join(STATUSES)} (comma-separated)"
                )
            out[key] = [*out.get(key, []), *statuses]  # any of them
        elif key == "capability":
            if value not in CAPABILITIES:
                raise ValidationError(
                    "--filter capability", value, f"use one of {', '.join(CAPABILITIES)}"
                )
            out[key] = [*out.get(key, []), value]  # every one of them

        else:
            out[key] = value
    return out


def _host_line(result: HostScan) -> str:
    if not result.ok:
        state = "auth required" if result.auth_required else "unreachable"
        return f"{result.host} ({result.url}): {state}: {result.error}"
    c = result.summary.counts() if result.summary else {}
    return (
        f"{result.host} ({result.url}, API {result.api_generation}): "
        f"{c.get('added', 0)} added, {c.get('updated', 0)} updated, "
        f"{c.get('missing', 0)} missing, {c.get('unchanged', 0)} unchanged "
        f"in {result.seconds:.2f}s"
    )


def run_scan(scanner: Scanner, *, quiet: bool) -> list[HostScan]:
    """Scan with one progress line per host on stderr (never wrapped, never read as markup:
    error texts hold brackets and long URLs)."""
    err = Console(stderr=True)
    if quiet:
        return scanner.scan_hosts()

    def report(result: HostScan) -> None:
        err.print(_host_line(result), highlight=False, markup=False, soft_wrap=True)

    with err.status(f"Scanning {len(scanner.hosts)} host(s)…"):
        return scanner.scan_hosts(on_host=report)


def auth_refused(names_and_urls: Sequence[tuple[str, str]]) -> str:
    """The one-line error of a scan or probe that a host refused for want of a valid token."""
    hosts = ", ".join(f"{name} ({url})" for name, url in names_and_urls)
    return (
        f"error: authentication required by {hosts}; set LM_API_TOKEN or the host's token "
        "in the lmstrix config (LM Studio: Developer > Server Settings > Manage Tokens)"
    )


def not_configured(config: Config, hosts: Iterable[str]) -> set[str]:
    """Which of the registry's ``hosts`` the configuration no longer names; none when it names
    no host at all (see :meth:`Config.configured_host_names`)."""
    configured = config.configured_host_names()
    return set() if configured is None else set(hosts) - configured


def no_longer_configured(hosts: Sequence[str]) -> str:
    """The line under ``hosts`` and ``list`` naming the registry's hosts no longer configured."""
    return (
        f"in the registry but no longer configured: {', '.join(hosts)} "
        "(`lmstrix hosts forget NAME` removes one with its models and results)"
    )


def no_host_answered(names_and_urls: Sequence[tuple[str, str]]) -> str:
    """The one-line error of a scan or probe that reached no host."""
    hosts = ", ".join(f"{name} ({url})" for name, url in names_and_urls)
    return (
        f"error: no LM Studio host answered: {hosts}; start LM Studio's server "
        "(`lms server start`) or fix LMSTRIX_HOSTS / the [[hosts]] of the config file"
    )


@click.command()
@click.option("--host", "base_url", help="Scan only this URL instead of the configured hosts.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per host.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-host summary as JSON.")
@handle_errors
def scan(base_url: str | None, timeout: float, as_json: bool) -> None:
    """Read every LM Studio host's models into the registry.

    New models are added, changed metadata refreshed, test results kept; a model gone from a
    host that answered is marked missing (not deleted). Exit code 4 when no host answered.
    """
    scanner = Scanner(base_url=base_url, timeout=timeout)
    results = run_scan(scanner, quiet=as_json)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        stats = scanner.registry.get_statistics()
        click.echo(
            f"registry: {stats['total']} model(s), {stats['tested']} tested, "
            f"{stats['missing']} missing"
        )
    refused = [(r.host, r.url) for r in results if r.auth_required]
    if refused:
        click.echo(auth_refused(refused), err=True)
        raise SystemExit(AUTH_REFUSED)
    if results and not any(r.ok for r in results):
        click.echo(no_host_answered([(r.host, r.url) for r in results]), err=True)
        raise SystemExit(NO_HOST_ANSWERED)


@click.command(name="list")
@click.option(
    "--sort",
    "sort_key",
    default="id",
    show_default=True,
    type=click.Choice(sorted(SORT_KEYS)),
    help="Sort column.",
)
@click.option("--desc", is_flag=True, help="Sort descending.")
@click.option(
    "--filter",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help=f"Keep matching models; KEY one of {', '.join(FILTER_KEYS)}. Repeatable.",
)
@click.option("--host", help="Only models of this host (by name).")
@click.option("--missing/--no-missing", default=True, help="Show models gone from their host.")
@click.option("--scan", "do_scan", is_flag=True, help="Rescan the hosts first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records for scripts.")
@wide_option
@handle_errors
def list_models(
    sort_key: str,
    desc: bool,
    filters: tuple[str, ...],
    host: str | None,
    missing: bool,
    do_scan: bool,
    as_json: bool,
    wide: bool,
) -> None:
    """Show the registry (reads it; does not contact LM Studio unless --scan)."""
    criteria = parse_filters(filters)
    if host:
        criteria["host"] = host
    scanner = Scanner() if do_scan else None
    if scanner is not None:
        run_scan(scanner, quiet=as_json)
    config = Config.load()
    registry = scanner.registry if scanner else ModelRegistry(config.database_url())
    if "host" in criteria and criteria["host"] not in {m.host for m in registry.list_models()}:
        config.host(criteria["host"])  # neither configured nor in the registry: names the known
    if not missing:
        criteria["present"] = True
    capabilities = criteria.pop("capability", [])
    found = [
        m
        for m in registry.filter_models(**criteria)
        if all(c in m.capabilities for c in capabilities)
    ]
    models = sort_models(found, sort_key, desc=desc)
    unconfigured = not_configured(config, {m.host for m in models})
    if as_json:
        echo_json([{**m.to_dict(), "host_configured": m.host not in unconfigured} for m in models])
        return
    if not models:
        if (criteria or capabilities) and len(registry):
            click.echo("No model matches the given filters.", err=True)
        else:
            click.echo("No models in the registry. Run `lmstrix scan` first.", err=True)
        return
    print_table(models_table(models, wide=wide, unconfigured=unconfigured), wide=wide)
    if unconfigured:
        click.echo(no_longer_configured(sorted(unconfigured)), err=True)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@wide_option
@click.pass_context
@handle_errors
def hosts(ctx: click.Context, as_json: bool, wide: bool) -> None:
    """Probe every configured host: reachable (or auth required), API generation, what it can
    do, models, latency; then the registry's hosts that are no longer configured. A host's
    error is printed under the table, one line each."""
    if ctx.invoked_subcommand is not None:
        return
    config = Config.load()
    scanner = Scanner(config=config)
    health = scanner.check_health()
    if as_json:
        echo_json(health)
    else:
        rows: list[list[str | Text]] = [
            [
                name,
                h["url"],
                Text("auth required", style="yellow")
                if h.get("auth_required")
                else Text("yes", style="green")
                if h["reachable"]
                else Text("no", style="red"),
                h["api_generation"] or "-",
                ", ".join(capability_labels(h["capabilities"])) if h.get("capabilities") else "-",
                str(h["models"]),
                str(h["loaded_instances"]),
                f"{h['latency_ms']:.1f} ms" if h["latency_ms"] is not None else "-",
            ]
            for name, h in health.items()
        ]
        headers = ("Host", "URL", "Reachable", "API", "Can", "Models", "Loaded", "Latency")
        table = fitted_table(
            headers,
            rows,
            shrink=("Host", "URL", "Can"),
            right=("Models", "Loaded", "Latency"),
            wide=wide,
        )
        print_table(table, wide=wide)
        for name, h in health.items():
            if h["error"]:
                click.echo(f"error: {name}: {one_line(h['error'])}", err=True)
        gone = not_configured(config, scanner.registry.host_names())
        if gone:
            click.echo(no_longer_configured(sorted(gone)), err=True)
    refused = [(n, h["url"]) for n, h in health.items() if h.get("auth_required")]
    if refused:
        click.echo(auth_refused(refused), err=True)
        raise SystemExit(AUTH_REFUSED)
    if health and not any(h["reachable"] for h in health.values()):
        click.echo(no_host_answered([(n, h["url"]) for n, h in health.items()]), err=True)
        raise SystemExit(NO_HOST_ANSWERED)


@hosts.command(name="forget")
@click.argument("name")
@yes_option
@handle_errors
def forget_host_command(name: str, yes: bool) -> None:
    """Remove host NAME from the registry, with its models, test results and jobs; asks first
    unless --yes."""
    registry = ModelRegistry(Config.load().database_url())
    if name not in registry.host_names():
        raise ValidationError("NAME", name, "no host of that name is in the registry")
    confirm(f"remove host {name!r} with its models, test results and jobs?", yes=yes)
    registry.forget_host(name)
    click.echo(f"forgot host {name}")


__all__ = [
    "forget_host_command",
    "hosts",
    "list_models",
    "no_host_answered",
    "parse_filters",
    "run_scan",
    "scan",
    "sort_models",
]

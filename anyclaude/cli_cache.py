"""`anyclaude cache ls|stats|clear`: the on-disk KV-cache store, through the kvstore service."""

from __future__ import annotations

import json
import time

import click

from anyclaude import bus, errors, messages


def _ask(name: str, args: dict | None = None, timeout: float = 5.0) -> dict:
    if not bus.socket_path("kvstore").exists():
        raise click.ClickException("the kvstore is not running; start anyclaude with `anyclaude up`")
    client = bus.Client("kvstore")
    try:
        reply = client.request(messages.Command(name, args or {}), timeout=timeout)
    except errors.AnyclaudeError as exc:
        raise click.ClickException(f"the kvstore did not answer: {exc.message}") from None
    finally:
        client.close()
    if not isinstance(reply, messages.Reply) or not reply.ok:
        raise click.ClickException(getattr(reply, "error", "") or f"kvstore refused {name}")
    return reply.data


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


@click.group()
def cache() -> None:
    """The prompt (KV) cache kept on disk by the kvstore service."""


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw numbers as JSON.")
def stats(as_json: bool) -> None:
    """Entries, bytes against the budget, hits, misses, and whether writes are failing."""
    data = _ask("stats")
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    click.echo(f"{data['dir']}: {data['entries']} entries, {_mb(data['bytes'])} of "
               f"{_mb(data['budget'])}, {data['pinned']} pinned")
    click.echo(f"hits {data['hits']}, misses {data['misses']}, puts {data['puts']}, "
               f"evicted {data['evicted']}, quarantined {data['quarantined']}")
    if data["degraded"]:
        click.echo(f"DEGRADED (memory-only until the next good write): {data['last_error']}")


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def ls(as_json: bool) -> None:
    """The stored prefixes, most recently used first."""
    entries = _ask("ls")["entries"]
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    if not entries:
        click.echo("no cached prefixes")
        return
    click.echo(f"{'model':<12} {'tokens':>8} {'size':>10}  {'last used':<19}  pinned")
    for e in entries:
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["last_used"]))
        click.echo(f"{e['fingerprint'][:12]:<12} {e['tokens']:>8} {_mb(e['bytes']):>10}  "
                   f"{used:<19}  {'yes' if e['pinned'] else ''}")


@cache.command()
@click.option("--fingerprint", default="", help="Only the entries of this model fingerprint.")
def clear(fingerprint: str) -> None:
    """Delete the cached prefixes on disk (engines keep their memory caches)."""
    data = _ask("clear", {"fingerprint": fingerprint} if fingerprint else {})
    click.echo(f"removed {data['removed']} entries ({_mb(data['bytes'])})")

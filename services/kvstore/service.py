"""Wiring of the kvstore process: the Store behind a bus.Service named "kvstore".

    CacheLookup -> CacheHit (path "" on a miss)
    CachePut    -> Reply(ok, {path, removed})
    Command     stats | ls | clear {fingerprint?} | quarantine {path, reason}
                | write_failed {error} | recent {fingerprint, max_bytes} -> {path, tokens};
                ping and info as every service
"""

from __future__ import annotations

from anyclaude import bus, config, errors
from anyclaude.messages import CacheLookup, CachePut, Command, Reply

from anyclaude.services.kvstore.store import Store


class KVStoreProcess:
    def __init__(self, store: Store, name: str = "kvstore"):
        self.store = store
        self.service = bus.Service(name, {
            CacheLookup: lambda call: call.send(store.lookup(call.message)),
            CachePut: lambda call: call.send(store.put(call.message)),
            Command: self._command,
        }, info=store.info)

    def _command(self, call: bus.Call) -> None:
        name, args = call.message.name, call.message.args
        store = self.store
        if name == "stats":
            reply = Reply(True, store.stats())
        elif name == "ls":
            reply = store.ls()
        elif name == "clear":
            reply = store.clear(str(args.get("fingerprint") or ""))
        elif name == "quarantine":
            reply = store.quarantine(str(args.get("path") or ""), str(args.get("reason") or ""))
        elif name == "write_failed":
            reply = store.write_failed(str(args.get("error") or ""))
        elif name == "recent":
            try:
                max_bytes = int(args.get("max_bytes") or 0)
            except (TypeError, ValueError):
                max_bytes = -1
            if max_bytes <= 0:
                reply = Reply(False, error="recent: max_bytes must be a positive integer")
            else:
                reply = store.recent(str(args.get("fingerprint") or ""), max_bytes)
        else:
            return self.service.builtin_command(call)  # ping, info, and the unknown-name reply
        call.send(reply)

    def run(self) -> None:
        self.service.run()


def start(settings: config.Settings) -> KVStoreProcess:
    store = Store(settings.kv_dir, settings.cache.disk_budget_mb * 2**20)
    try:
        store.open()
    except OSError as exc:
        raise errors.ConfigError(f"cache directory {settings.kv_dir}: {exc.strerror or exc}; "
                                 "set [cache] dir in anyclaude.toml to a writable directory") from None
    return KVStoreProcess(store)

"""Wiring of the kvstore process: the Store behind a bus.Service named "kvstore".

    CacheLookup -> CacheHit (path "" on a miss)
    CachePut    -> Reply(ok, {path, removed})
    Command     stats | ls | clear {fingerprint?} | quarantine {path, reason}
                | write_failed {error}; ping and info as every service
"""

from __future__ import annotations

from anyclaude import bus, config, errors
from anyclaude.messages import CacheLookup, CachePut, Command, Reply

from .store import Store


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
        else:
            return self.service._builtin_command(call)  # ping, info, and the unknown-name reply
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

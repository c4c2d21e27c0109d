"""python -m anyclaude.services.kvstore: the on-disk KV-cache store (see service.py)."""

from anyclaude import service_main

from anyclaude.services.kvstore.service import start

if __name__ == "__main__":
    service_main.run("kvstore", start)

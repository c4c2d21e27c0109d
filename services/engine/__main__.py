"""python -m anyclaude.services.engine --model ID"""

import argparse
import os
import sys

from anyclaude import service_main
from anyclaude.errors import ConfigError
from anyclaude.services.engine.service import EngineService


def _with_fast_blas() -> None:
    """LD_PRELOAD works only at process start: re-exec once with OpenBLAS in front."""
    from anyclaude import blas
    env = blas.engine_env()
    if env.get("LD_PRELOAD") != os.environ.get("LD_PRELOAD") and "ANYCLAUDE_BLAS_EXEC" not in os.environ:
        env["ANYCLAUDE_BLAS_EXEC"] = "1"
        os.execve(sys.executable, [sys.executable, "-m", "anyclaude.services.engine", *sys.argv[1:]], env)


def main() -> None:
    _with_fast_blas()
    parser = argparse.ArgumentParser(prog="anyclaude-engine")
    parser.add_argument("--model", required=True, help="configured model id")
    args = parser.parse_args()

    def start(settings):
        if args.model not in settings.models:
            raise ConfigError(f"model {args.model!r} is not configured in {settings.source}; "
                              f"configured: {', '.join(settings.models)}")
        return EngineService(settings, args.model)

    service_main.run(f"engine-{args.model}", start)


if __name__ == "__main__":
    main()

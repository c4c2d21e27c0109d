"""python -m anyclaude.services.engine --model ID"""

import argparse

from anyclaude import service_main
from anyclaude.errors import ConfigError
from anyclaude.services.engine.service import EngineService


def main() -> None:
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

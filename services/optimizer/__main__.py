"""python -m anyclaude.services.optimizer"""

from anyclaude import service_main
from anyclaude.services.optimizer.service import OptimizerService


def main() -> None:
    service_main.run("optimizer", OptimizerService)


if __name__ == "__main__":
    main()

"""python -m anyclaude.services.websearch: web search over the bus (see service.py)."""

from anyclaude import service_main
from anyclaude.services.websearch.service import WebsearchService


def main() -> None:
    service_main.run("websearch", WebsearchService)


if __name__ == "__main__":
    main()

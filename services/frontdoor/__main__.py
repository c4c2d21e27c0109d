"""python -m anyclaude.services.frontdoor: the front door (see process.py)."""

from anyclaude import service_main
from anyclaude.services.frontdoor.process import FrontDoor, load_settings


def main() -> None:
    service_main.run("frontdoor", FrontDoor, load=load_settings, label="anyclaude frontdoor")


if __name__ == "__main__":
    main()

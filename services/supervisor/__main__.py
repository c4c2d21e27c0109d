"""python -m anyclaude.services.supervisor: run the supervisor in the foreground."""

from anyclaude.services.supervisor.launch import main

if __name__ == "__main__":
    main()

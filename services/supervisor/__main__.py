"""python -m anyclaude.services.supervisor: run the supervisor in the foreground."""

import sys

from anyclaude.services.supervisor.launch import main

sys.exit(main())

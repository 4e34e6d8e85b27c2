"""``python -m cli ...`` is ``ao ...``."""
import sys

from cli.main import main

sys.exit(main())

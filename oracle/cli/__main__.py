"""``python -m oracle.cli ...`` is ``ao ...``."""
import sys

from oracle.cli.main import main

sys.exit(main())

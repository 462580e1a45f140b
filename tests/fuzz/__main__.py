"""``python -m tests.fuzz``: see the package docstring."""
import sys

from tests.fuzz.report import main

sys.exit(main())

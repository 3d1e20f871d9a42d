"""`python -m tabagent_worker --socket PATH --files-socket PATH`: tabagent starts it this way."""

import sys

from .server import main

sys.exit(main())

"""``python -m jobs.tune``."""

import sys

from jobs.tune.run import main

sys.exit(main())

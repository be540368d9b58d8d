import sys

from ablations.report.cli import main

sys.exit(main())

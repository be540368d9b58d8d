import sys

from ablations.run.cli import main

sys.exit(main())

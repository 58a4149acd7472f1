import sys

from reporting_assets.cli import main

sys.exit(main())

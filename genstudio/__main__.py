import sys

from genstudio.cli import main

sys.exit(main())

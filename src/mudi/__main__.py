import sys

from mudi.cli import main

sys.exit(main())

import sys

from lowbridge.cli import main

sys.exit(main())

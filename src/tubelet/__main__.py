import sys

from tubelet.cli import main

sys.exit(main())

import sys

from ieiw.cli import main

sys.exit(main())

import sys

from lightning_ae.cli import main

sys.exit(main())

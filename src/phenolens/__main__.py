import sys

from phenolens.cli.main import run

sys.exit(run())

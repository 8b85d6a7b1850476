"""`python -m gpu_analysis` is the `gpu-analysis` command."""

import sys

from gpu_analysis.cli import main

sys.exit(main())

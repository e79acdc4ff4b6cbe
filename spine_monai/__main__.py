import sys

from spine_monai.cli import main

sys.exit(main())

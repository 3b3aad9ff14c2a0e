import sys

from sandbox.kubeapi.cli import main

sys.exit(main())

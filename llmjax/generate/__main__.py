import sys

from llmjax.generate import cli

sys.exit(cli.main())

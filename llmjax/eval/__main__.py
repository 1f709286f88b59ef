import sys

from llmjax.eval import cli

sys.exit(cli.main())

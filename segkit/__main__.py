import sys

from .cli import main

# guarded: vLLM spawns its engine process, which re-imports the main module (`python -m segkit` too)
if __name__ == "__main__":
    sys.exit(main())

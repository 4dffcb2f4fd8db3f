"""val.py: not implemented yet (see the project's open issues)."""

import sys

if __name__ == "__main__":
    print("val.py is not implemented yet", file=sys.stderr)
    sys.exit(2)

"""`python -m spry.bench --child SPEC`: one bench mode in this process (the parent's child)."""

import argparse
import sys

from spry.bench.child import child

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one bench mode in this process (internal)")
    parser.add_argument("--child", required=True, help="JSON spec from the parent")
    sys.exit(child(parser.parse_args().child))

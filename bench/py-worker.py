#!/usr/bin/env python3
# The Python worker of bench/py-pool.py: echo, as herd-testworker's.
import herd

herd.serve({"echo": lambda arg: arg})

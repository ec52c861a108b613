"""Skip doctest collection of the modules whose optional extras are missing."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("distributed") is None:
    collect_ignore.append("sk_softreg/distributed.py")
if importlib.util.find_spec("accelerate") is None:
    collect_ignore.append("sk_softreg/accelerate.py")

"""``python -m recommender`` is ``nbtl-recommend``."""

from recommender.cli import main

main()

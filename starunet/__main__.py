"""``python -m starunet ...`` -- see :mod:`starunet.cli`."""
from starunet.cli import main

raise SystemExit(main())

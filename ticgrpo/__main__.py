"""``python -m ticgrpo ...`` is the same as the ``ticgrpo`` console script."""

from .cli import main

raise SystemExit(main())

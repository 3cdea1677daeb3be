"""``python -m worker.embedded``: start, stop or show the embedded servers."""

from worker.embedded.servers import main

raise SystemExit(main())

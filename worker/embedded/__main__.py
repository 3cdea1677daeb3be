"""``python -m worker.embedded.servers``: start, stop or show the embedded servers."""

from worker.embedded.servers.servers import main

raise SystemExit(main())

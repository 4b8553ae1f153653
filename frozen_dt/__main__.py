from frozen_dt.cli import main

raise SystemExit(main())

from actionclip.apps.cli import main

raise SystemExit(main())

from actionclip.cli import main

raise SystemExit(main())

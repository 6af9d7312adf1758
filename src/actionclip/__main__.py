from actionclip.cli.main import main

raise SystemExit(main())

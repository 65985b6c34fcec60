from infaas.cli import main

raise SystemExit(main())

from chatpop_common.admin.commands import main

raise SystemExit(main())

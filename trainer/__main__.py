from trainer.cli import main
from trainer.process_end import skip_final_collection

code = main()
skip_final_collection()
raise SystemExit(code)

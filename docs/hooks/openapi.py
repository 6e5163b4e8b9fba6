"""MkDocs hook: writes the API's OpenAPI schema to docs/openapi.json before each build, for docs/openapi.md.

The schema comes from the app itself (`service.app.create_app`), so the reference can never drift from the code.
Building the app object opens no connection (the Redis clients connect on first use), so no Redis needs to run.
The file is gitignored; it is rewritten only when its content changes, so `mkdocs serve` does not rebuild in a loop.
"""

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "openapi.json"


def on_config(config: Any) -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the repository's packages, whether or not they are installed
    from service.app import create_app

    text = json.dumps(create_app().openapi(), indent=1, sort_keys=False) + "\n"
    if not OUT.exists() or OUT.read_text() != text:
        OUT.write_text(text)
    return config

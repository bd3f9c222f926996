import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# The tools the tests run (hadolint, check-jsonschema, podman-compose ...) are scripts of the
# environment this Python belongs to (.venv/): found as if it were activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

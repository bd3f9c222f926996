import sys
from pathlib import Path

# The artifact tests share deploy_artifacts.py, next to this file.
sys.path.insert(0, str(Path(__file__).parent))

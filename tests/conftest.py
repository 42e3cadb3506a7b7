import os
import sys
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers: synthetic, paper loops

REPO = Path(__file__).resolve().parents[1]

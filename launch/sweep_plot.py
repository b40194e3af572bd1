"""isoflop.png of a sweep's law.json: moved to llm/sweep/plot.py (the sweep is a package, llm/sweep/); this name
stays for code that imported it from here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm.sweep.plot import plot_isoflop  # noqa: E402,F401  (after the path fix; re-exported)

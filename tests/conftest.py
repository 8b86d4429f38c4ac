import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# Tests run on CPU even where a GPU exists, and stay quiet.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

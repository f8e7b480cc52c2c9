"""Loaded with `-p tests.support.testenv` before Django's settings are read, so the
test run never touches the developer's var/ (keys, database, recordings)."""

import atexit
import os
import shutil
import tempfile

if "AIRLOCK_VAR_DIR" not in os.environ:
    _var_dir = tempfile.mkdtemp(prefix="airlock-test-var-")
    os.environ["AIRLOCK_VAR_DIR"] = _var_dir
    # The run's keys, recordings and databases go with it.
    atexit.register(shutil.rmtree, _var_dir, ignore_errors=True)
os.environ.setdefault("AIRLOCK_SECURE_COOKIES", "0")

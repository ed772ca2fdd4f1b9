"""Fresh-process workers of the speed benchmarks: ``python -m mambaseg.apps.speed --worker | --peak | --infer-peak
SPEC`` prints one JSON line (read by :func:`mambaseg.apps.speed.common.run_worker`)."""

import json
import sys

from .models import peak_worker
from .precision import infer_peak_worker
from .scan import scan_worker

WORKERS = {"--worker": scan_worker, "--peak": peak_worker, "--infer-peak": infer_peak_worker}

if len(sys.argv) == 3 and sys.argv[1] in WORKERS:
    sys.stdout.write(json.dumps(WORKERS[sys.argv[1]](json.loads(sys.argv[2]))) + "\n")  # result channel to the parent
else:
    sys.exit(f"usage: python -m mambaseg.apps.speed {{{'|'.join(WORKERS)}}} SPEC_JSON")

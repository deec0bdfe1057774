"""Peak RSS and value of STOI/ESTOI on a long item: the test corpus tiled to MINUTES, plus noise.

    .venv/bin/python benchmarks/checks/stoi_memory.py estoi 20
"""
import resource
import sys
import time

import numpy as np

from pipeline.io.audio import load
from pipeline.io.manifest import read_manifest
from pipeline.metrics import registry as metrics

ys = [load(u.path, 16000) for u in read_manifest('manifests/pocketsphinx.jsonl')]  # run from the repo root
y = np.concatenate(ys)
minutes = float(sys.argv[2])
y=np.tile(y, int(np.ceil(minutes*60*16000/len(y))))[:int(minutes*60*16000)]
rng = np.random.default_rng(0)
x = (y + 0.01 * rng.standard_normal(len(y))).astype(np.float32)
t = time.time()
v = getattr(metrics,sys.argv[1])(reference=y,estimate=x,sample_rate=16000)
print(sys.argv[1], minutes, 'min', round(v,5), round(time.time()-t,1),'s', 'peak RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024,'MB')

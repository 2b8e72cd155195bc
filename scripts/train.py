"""Train gpt_scratch. Examples:

    accelerate launch --config_file configs/accelerate/one-process.yaml scripts/train.py --config configs/shakespeare.yaml
    python scripts/train.py --config configs/shakespeare.yaml --max_steps 100 --data ../shared/data/tinyshakespeare.txt
    accelerate launch --config_file configs/accelerate/cpu-2proc.yaml scripts/train.py --config configs/shakespeare.yaml
    torchrun --standalone --nproc_per_node 2 scripts/train.py --config configs/shakespeare.yaml   # 2 CPU processes
    python scripts/train.py --config configs/finetune-shakespeare.yaml       # fine-tune OpenAI's GPT-2
    python scripts/train.py --config configs/shakespeare.yaml --dataset corpus.parquet --text_column text

`--help` lists every setting with its default.
"""

from gpt_scratch.train import main

if __name__ == "__main__":
    main()
